"""What the bridge tests share: a registered city on each database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from tests.support.city import register


@pytest.fixture
def city(db_url: str) -> Iterator[sessionmaker[Session]]:
    """`testville` (tests/support/city.py) on SQLite and on PostgreSQL."""
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    register(factory)
    yield factory
    engine.dispose()
