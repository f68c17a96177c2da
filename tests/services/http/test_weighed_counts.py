"""A flow that carries a count and a mass together, through the API on SQLite and PostgreSQL:
the count counts as things, the mass as the material `material` names, and a design's mass
is not modelled on top of it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from fabcity.core.db import transaction
from fabcity.core.models import Design
from fabcity.ingest.rebuild import rebuild
from tests.support.api import CityClient, city_client, ingest
from tests.support.city import CITY, event, flow

STOOL = "https://example.org/okh/stool.yml"
NAMES = "produced_count,produced_kg,open_design_share,input_kg,waste_kg,diversion_rate"


@pytest.fixture
def client(db_url: str) -> Iterator[CityClient]:
    with city_client(db_url) as test_client:
        with transaction(test_client.factory) as s:
            # A registered open design of 5 kg a piece.
            s.add(
                Design(url=STOOL, title="Stool", licence="CERN-OHL-S-2.0", is_open=True,
                       mass_kg=5.0, parts=[], standard="okh-v1", updated_at=datetime.now(UTC))
            )  # fmt: skip
        yield test_client


def day(client: CityClient) -> dict[str, dict[str, Any]]:
    response = client.get(
        f"/v1/cities/{CITY}/metrics",
        params={"names": NAMES, "from": "2026-03-10", "to": "2026-03-10"},
    )
    assert response.status_code == 200, response.text
    return {s["name"]: s["points"][0] for s in response.json()["series"]}


def test_a_count_with_its_mass_counts_the_mass_once(client: CityClient) -> None:
    # 3 stools weighed at 12 kg in all: produced_kg 12, not 12 + 3 × 5 (the design's mass).
    made = flow("produce", "furniture", 3, "count", design=STOOL, mass_kg=12.0, material="wood")
    # 2 broken parts of 0.4 kg of plastic, recycled: waste_kg 0.4, all diverted.
    thrown = flow("discard", "part", 2, "count", fate="recycle", mass_kg=0.4, material="plastic")
    ingest(client, [event([made, thrown])])
    got = day(client)
    assert got["produced_count"]["value"] == 3
    assert got["produced_kg"]["value"] == 12.0
    assert got["produced_kg"]["state"] == "reported"  # weighed, not modelled
    assert got["open_design_share"]["value"] == 1.0
    assert got["waste_kg"]["value"] == 0.4
    assert got["diversion_rate"]["value"] == 1.0
    # A rebuild from the stored events derives the same.
    rebuild(client.factory, from_events=True)
    assert day(client) == got


def test_a_count_without_its_mass_is_modelled_from_its_design(client: CityClient) -> None:
    ingest(client, [event(flow("produce", "furniture", 3, "count", design=STOOL))])
    got = day(client)
    assert got["produced_kg"]["value"] == 15.0  # 3 × 5 kg
    assert got["produced_kg"]["state"] == "modelled"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (flow("consume", "wood", 2, "kg", mass_kg=2.0, material="wood"), "things counted"),
        (flow("produce", "part", 2, "count", mass_kg=1.0), "needs `material`"),
        (flow("produce", "part", 2, "count", mass_kg=1.0, material="PLA"), "not 'PLA'"),
        (flow("produce", "part", 2, "count", mass_kg=1.0, material="electricity"), "in kg"),
        (flow("cite", "design", 1, "count", mass_kg=1.0, material="wood"), "applies to"),
        (flow("produce", "part", 2, "count", mass_kg=-1.0, material="wood"), "mass_kg"),
        (flow("produce", "part", 2, "kg", mass_kg=1.0, material="wood"), "cannot be converted"),
    ],
)
def test_a_mass_that_does_not_fit_is_refused_by_index(
    client: CityClient, given: dict[str, Any], says: str
) -> None:
    response = client.post(
        "/v1/events",
        json=[event(flow()), event(given)],
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 1
    [rejected] = body["rejected"]
    assert rejected["index"] == 1 and says in rejected["error"], rejected
