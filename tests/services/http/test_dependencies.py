"""SessionDep: one transaction per request, committed before the response is sent.

A client that got a 2xx must find its write stored, and a commit that fails must reach the
client as a problem, never as a 2xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core import models
from fabcity.core.errors import Invalid
from services.http.app import create_app
from services.http.auth import Message, Receive, Scope, Send
from services.http.dependencies import AppState, SessionDep
from tests.conftest import settings_for
from workers.dispatch import NoDispatch

CITY = {"slug": "stored-city", "name": "Stored", "country": "ES"}


def stored(factory: sessionmaker[Session], slug: str) -> bool:
    """Whether a session of its own finds the city: what another client would see."""
    with factory() as s:
        return s.scalar(select(models.City.id).where(models.City.slug == slug)) is not None


def make_app(db_url: str, factory: sessionmaker[Session]) -> FastAPI:
    return create_app(settings_for(db_url), factory=factory, dispatcher=NoDispatch())


class SeesAtResponseStart:
    """Wraps an app; when the response starts, asks a session of its own whether the write is
    there. With the commit after the response, it would not be."""

    def __init__(self, app: FastAPI, factory: sessionmaker[Session], slug: str) -> None:
        self.app = app
        self.factory = factory
        self.slug = slug
        self.seen: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.seen.append(stored(self.factory, self.slug))
            await send(message)

        await self.app(scope, receive, watched if scope["type"] == "http" else send)


def test_the_write_is_committed_before_the_response_starts(
    db_url: str, factory: sessionmaker[Session]
) -> None:
    watcher = SeesAtResponseStart(make_app(db_url, factory), factory, CITY["slug"])
    with TestClient(watcher) as client:
        response = client.post("/v1/cities", json=CITY)
    assert response.status_code == 201, response.text
    assert watcher.seen == [True]


@pytest.fixture
def failing_commit(factory: sessionmaker[Session]) -> Iterator[list[Exception]]:
    """The factory's commits fail with the exception put in the list."""
    raised: list[Exception] = []

    def fail(_: Session) -> None:
        if raised:
            raise raised[0]

    event.listen(factory, "before_commit", fail)
    yield raised
    event.remove(factory, "before_commit", fail)


def test_a_commit_that_fails_is_a_problem_not_a_2xx(
    db_url: str, factory: sessionmaker[Session], failing_commit: list[Exception]
) -> None:
    failing_commit.append(OperationalError("COMMIT", {}, Exception("disk full")))
    with TestClient(make_app(db_url, factory)) as client:
        response = client.post("/v1/cities", json=CITY)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Database unavailable"
    assert not stored(factory, CITY["slug"])


def test_a_commit_that_fails_for_any_other_reason_is_a_500_problem(
    db_url: str, factory: sessionmaker[Session], failing_commit: list[Exception]
) -> None:
    failing_commit.append(RuntimeError("the commit broke"))
    app = make_app(db_url, factory)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/cities", json=CITY)
    assert response.status_code == 500, response.text
    assert response.json()["type"].endswith("/internal")
    assert not stored(factory, CITY["slug"])


def test_an_endpoint_that_raises_rolls_its_writes_back(
    db_url: str, factory: sessionmaker[Session]
) -> None:
    app = make_app(db_url, factory)
    sessions: list[Session] = []

    @app.post("/test/write-then-fail")
    def write_then_fail(s: SessionDep) -> dict[str, Any]:
        sessions.append(s)
        s.add(models.City(slug=CITY["slug"], name="Half", country="ES", timezone="UTC"))
        s.flush()
        raise Invalid("refused after writing")

    with TestClient(app) as client:
        response = client.post("/test/write-then-fail")
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "refused after writing"
    assert not stored(factory, CITY["slug"])
    assert not sessions[0].in_transaction()


def test_one_request_is_one_session(db_url: str, factory: sessionmaker[Session]) -> None:
    """Two parameters asking for the session get the same one: the request's transaction."""
    app = make_app(db_url, factory)

    @app.get("/test/sessions")
    def both(a: SessionDep, b: SessionDep) -> dict[str, bool]:
        return {"same": a is b, "open": a.in_transaction()}

    with TestClient(app) as client:
        assert client.get("/test/sessions").json() == {"same": True, "open": True}


def test_the_app_state_is_where_the_dependencies_find_it(
    db_url: str, factory: sessionmaker[Session]
) -> None:
    app = make_app(db_url, factory)
    state = app.state.fabcity
    assert isinstance(state, AppState)
    assert state.factory is factory
