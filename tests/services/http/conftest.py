"""The HTTP tests' app: a migrated SQLite database with the test city, and clients of the
app in role `both`. A module that needs another app defines its own fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from services.http.app import create_app
from tests.conftest import settings_for
from tests.services.http.support import (
    MakeClient,
)
from tests.support.city import register
from workers.dispatch import NoDispatch


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    """The test's own session factory on a migrated SQLite database, with `testville`."""
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    yield factory
    engine.dispose()


@pytest.fixture
def make_client(
    sqlite_url: str, sessions: sessionmaker[Session]
) -> Iterator[Callable[..., TestClient]]:
    """A client of the app in role `both`, with settings overridden per test."""
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = settings_for(sqlite_url, **overrides)
        app = create_app(settings, "both", factory=sessions, dispatcher=NoDispatch())
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()
