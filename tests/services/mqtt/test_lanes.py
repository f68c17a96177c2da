"""The device lane's transactions: a batch that fails to commit leaves the quota as it was."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters.base import Message
from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter
from fabcity.ingest.deadletters import KEPT, OVER_DEVICE, Budget, Keeper, Quota
from services.mqtt.lanes import store_batch


@pytest.fixture
def sqlite_factory(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sqlite_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_a_batch_that_fails_to_commit_gives_its_quota_back(
    sqlite_factory: sessionmaker[Session],
) -> None:
    quota = Quota("fabcity/v1", 3600, Budget(1, 1000), Budget(10, 1000), Budget(10, 1000))
    keeper = Keeper(quota=quota)
    unknown = Message("tele/unknown/SENSOR", b"{}", datetime.now(UTC))

    def refuse(_: Session) -> None:
        raise RuntimeError("the database went away")

    event.listen(Session, "before_commit", refuse)
    try:
        with pytest.raises(RuntimeError):
            store_batch(sqlite_factory, [unknown], keeper)
    finally:
        event.remove(Session, "before_commit", refuse)
    # Tried again, as the lane does: the device's one letter still fits its budget.
    assert store_batch(sqlite_factory, [unknown], keeper).kept.outcomes == {KEPT: 1}
    other = Message("tele/unknown/SENSOR", b"{other}", datetime.now(UTC))
    assert store_batch(sqlite_factory, [other], keeper).kept.outcomes == {OVER_DEVICE: 1}
    with transaction(sqlite_factory) as s:
        assert s.scalar(select(func.count()).select_from(DeadLetter)) == 1
