"""Events dated ahead of now, through `POST /v1/events` on SQLite and PostgreSQL: past the
skew (a day by default, `FABCITY_MAX_FUTURE_SKEW_S`) refused by index with the reason;
within it, accepted. An event dated 2030 used to be stored without a word, and counted in a
window that had not begun."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.core.models import Event
from fabcity.core.settings import get_settings
from services.http.app import create_app
from tests.conftest import settings_for
from tests.services.http.support import BATCH, PRINTER, assert_problem, post
from tests.support.city import event, flow, register
from workers.dispatch import NoDispatch

Serve = Callable[..., tuple[TestClient, Any]]


@pytest.fixture
def serve(db_url: str) -> Iterator[Serve]:
    """An app on the test city, with settings overridden per test; and its sessions."""
    with ExitStack() as stack:
        engine = make_engine(db_url)
        stack.callback(engine.dispose)
        factory = make_sessionmaker(engine)
        register(factory)

        def make(**overrides: object) -> tuple[TestClient, Any]:
            settings = settings_for(db_url, **overrides)
            app = create_app(settings, "both", factory=factory, dispatcher=NoDispatch())
            return stack.enter_context(TestClient(app)), factory

        yield make


def stored(factory: Any) -> set[str]:
    with factory() as s:
        return set(s.scalars(select(Event.event_id)))


def ahead(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def test_an_event_dated_ahead_past_the_skew_is_refused_by_index(serve: Serve) -> None:
    client, factory = serve()
    batch = [
        event([flow()], id="in-2030", time="2030-01-01T00:00:00+01:00"),
        event([flow()], id="soon", time=ahead(hours=23)),  # within a day: a fast clock
        event([flow()], id="now", time=ahead(seconds=0)),
        event([flow()], id="two-days", time=ahead(days=2)),
        # not a plain flow: read by the models rather than the fast reader, refused the same
        event({"online": True}, id="status", source=PRINTER, type="fabcity.device.status",
              time=ahead(days=3)),
    ]  # fmt: skip
    response = post(client, batch, BATCH)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 2
    reasons = {r["index"]: r["error"] for r in body["rejected"]}
    assert sorted(reasons) == [0, 3, 4]
    assert (
        "2030-01-01" in reasons[0] and "ahead" in reasons[0] and "at most 1 day ahead" in reasons[0]
    )
    assert all("ahead of when the event was received" in r for r in reasons.values())
    assert stored(factory) == {"soon", "now"}


def test_a_lone_future_event_is_a_422_problem(serve: Serve) -> None:
    client, factory = serve()
    problem = assert_problem(post(client, event([flow()], time="2030-06-01T12:00:00Z")), 422)
    assert "ahead" in problem["detail"]
    assert [r["index"] for r in problem["rejected"]] == [0]
    every = post(client, [event([flow()], time=ahead(days=5))] * 2, BATCH)
    listed = assert_problem(every, 422)
    assert [r["index"] for r in listed["rejected"]] == [0, 1]
    assert "[0]" in listed["detail"] and "[1]" in listed["detail"]
    assert stored(factory) == set()


@pytest.fixture
def an_hours_skew(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The variable, read as a process reads it: the ingest path's bounds come from the
    process's settings (`get_settings`), not from the app's."""
    monkeypatch.setenv("FABCITY_MAX_FUTURE_SKEW_S", "3600")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("FABCITY_MAX_FUTURE_SKEW_S")
    get_settings.cache_clear()


@pytest.mark.usefixtures("an_hours_skew")
def test_the_skew_is_a_setting(serve: Serve) -> None:
    # An hour's skew: two hours ahead is refused, thirty minutes is not.
    client, factory = serve()
    batch = [event([flow()], id="2h", time=ahead(hours=2)),
             event([flow()], id="30m", time=ahead(minutes=30))]  # fmt: skip
    body = post(client, batch, BATCH).json()
    assert [r["index"] for r in body["rejected"]] == [0]
    assert "at most 1 hour ahead" in body["rejected"][0]["error"]
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 1
