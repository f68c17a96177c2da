"""An in-process API on a registered test city, and posting events through it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.city import register
from workers import jobs
from workers.dispatch import NoDispatch


class CityClient(TestClient):
    """A test client that also knows the session factory, to recompute as a worker would."""

    factory: sessionmaker[Session]


@contextmanager
def city_client(url: str) -> Iterator[CityClient]:
    """The whole app on `url`, with the test city registered and no worker running."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    register(factory)
    app = create_app(settings_for(url), factory=factory, dispatcher=NoDispatch())
    with CityClient(app) as client:
        client.factory = factory
        yield client
    engine.dispose()


def ingest(client: CityClient, events: list[dict[str, Any]]) -> None:
    """Post a batch that must be accepted whole, then recompute what it dirtied."""
    response = client.post(
        "/v1/events",
        content=orjson.dumps(events),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text
    assert not response.json()["rejected"]
    jobs.recompute_dirty_windows(client.factory, 100)
