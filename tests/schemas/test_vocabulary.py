"""The vocabulary of flows: every action has an example the API accepts as written, and the
README and `/docs` show the same table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from fabcity.core.models import Flow
from fabcity.registry.entries import DEFAULT_RESOURCES
from schemas.events import Action, Fate, Ring
from schemas.vocabulary import EXAMPLES, describe, example_event
from tests.support.api import CityClient, city_client
from tests.support.city import CITY, SITE

README = Path(__file__).parents[2] / "README.md"
TABLE = describe((r.name, r.unit, r.mfa_category, r.secondary) for r in DEFAULT_RESOURCES)


@pytest.fixture
def client(db_url: str) -> Iterator[CityClient]:
    with city_client(db_url) as test_client:
        yield test_client


def test_every_word_is_explained() -> None:
    assert set(EXAMPLES) == set(Action)
    for word in [*Action, *Ring, *Fate]:
        assert f"| `{word.value}` |" in TABLE, word
    for resource in DEFAULT_RESOURCES:
        assert f"| `{resource.name}` |" in TABLE, resource.name


def test_the_readme_and_docs_show_the_table(client: CityClient) -> None:
    found = re.search(
        r"<!-- vocabulary: [^>]*-->\n(.*?)\n<!-- /vocabulary -->", README.read_text(), re.S
    )
    assert found is not None, "the README has lost its vocabulary block"
    assert found.group(1) == TABLE, "run schemas.vocabulary.describe and paste it in README.md"
    assert client.get("/openapi.json").json()["info"]["description"] == TABLE


def test_every_example_is_accepted_as_written(client: CityClient) -> None:
    events = [example_event(action, f"/{CITY}/{SITE}") for action in Action]
    response = client.post(
        "/v1/events",
        content=orjson.dumps(events),
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": len(Action), "duplicates": 0, "rejected": []}
    with client.factory() as s:
        actions = sorted(s.scalars(select(Flow.action)))
    assert actions == sorted(a.value for a in Action)
