"""Targets per city and metric: a planner sets, replaces and removes them for its own city;
a share is written between 0 and 1; nobody else's city, and no metric that does not exist."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.registry import entries, keys
from schemas import api
from tests.support.api import city_client
from tests.support.city import CITY, SITE

MakeClient = Callable[..., TestClient]
GOAL = {"direction": "at_least", "value": 0.5, "due": "2030-12-31", "note": "city plan 2026"}


def test_a_target_is_set_replaced_listed_and_removed(db_url: str) -> None:
    with city_client(db_url) as client:
        url = f"/v1/cities/{CITY}/targets"
        made = client.put(f"{url}/local_input_share", json=GOAL)
        assert made.status_code == 201, made.text
        assert made.json()["unit"] == "ratio" and made.json()["value"] == 0.5
        again = client.put(f"{url}/local_input_share", json={**GOAL, "value": 0.6})
        assert again.status_code == 200
        less = {"direction": "at_most", "value": 120, "due": "2030-12-31"}
        assert client.put(f"{url}/waste_kg", json=less).status_code == 201
        listed = client.get(url).json()
        assert [(t["metric"], t["value"], t["direction"]) for t in listed] == [
            ("local_input_share", 0.6, "at_least"),
            ("waste_kg", 120, "at_most"),
        ]
        assert listed[0]["updated_at"].endswith(("Z", "+00:00"))
        assert client.delete(f"{url}/waste_kg").status_code == 204
        assert client.delete(f"{url}/waste_kg").status_code == 404
        assert [t["metric"] for t in client.get(url).json()] == ["local_input_share"]


def test_a_percentage_typed_for_a_share_or_an_unknown_metric_is_refused(db_url: str) -> None:
    with city_client(db_url) as client:
        url = f"/v1/cities/{CITY}/targets"
        share = client.put(f"{url}/local_input_share", json={**GOAL, "value": 50})
        assert share.status_code == 422 and "0.5 for 50 %" in share.json()["detail"]
        unknown = client.put(f"{url}/happiness", json=GOAL)
        assert unknown.status_code == 422 and "unknown metric" in unknown.json()["detail"]
        for absurd in ("NaN", "Infinity", 1e300):
            response = client.put(f"{url}/waste_kg", json={**GOAL, "value": absurd})
            assert response.status_code == 422, absurd
        assert client.put("/v1/cities/atlantis/targets/fci", json=GOAL).status_code == 404
        assert client.put(f"{url}/fci", json={**GOAL, "due": "someday"}).status_code == 422


def test_only_the_citys_planners_and_admins_set_its_targets(
    make_client: MakeClient, sessions: sessionmaker[Session]
) -> None:
    client = make_client(auth="required")
    with transaction(sessions) as s:
        entries.create_city(
            s, api.CityIn(slug="otherville", name="O", country="NL", timezone="Europe/Amsterdam")
        )
        planner = {"X-API-Key": keys.create(s, "planner", CITY).secret}
        elsewhere = {"X-API-Key": keys.create(s, "planner", "otherville").secret}
        lab = {"X-API-Key": keys.create(s, "site", CITY, SITE).secret}
    url = f"/v1/cities/{CITY}/targets/fci"
    assert client.put(url, json=GOAL, headers=lab).status_code == 403
    assert client.put(url, json=GOAL, headers=elsewhere).status_code == 403
    assert client.put(url, json=GOAL).status_code == 401
    assert client.put(url, json=GOAL, headers=planner).status_code == 201
    assert client.get(f"/v1/cities/{CITY}/targets", headers=planner).status_code == 200
    assert client.get(f"/v1/cities/{CITY}/targets", headers=lab).status_code == 403
