"""Corrections over HTTP, and what a message became (`GET /v1/events` and
`GET /v1/events/{source}/{id}`), with keys required, on SQLite and PostgreSQL.

A lab posts 240 kg of filament where it meant 2.40 kg, corrects it, and everyone who may
looks at what happened: the lab manager (a site key), the city's planner, and nobody else.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.registry import entries, keys
from schemas import api
from services.http.app import create_app
from tests.conftest import settings_for
from tests.services.http.support import assert_problem
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow, register
from workers import jobs
from workers.dispatch import NoDispatch

LAB = f"/{CITY}/{SITE}"
PRINTER = f"/{CITY}/{SITE}/{DEVICE}"
ELSEWHERE = "/otherville/lab"
SINGLE = {"content-type": "application/cloudevents+json"}
BATCH = {"content-type": "application/cloudevents-batch+json"}


@dataclass
class World:
    client: TestClient
    factory: sessionmaker[Session]
    keys: dict[str, dict[str, str]]

    def post(self, who: str, body: Any, batch: bool = False) -> Response:
        return self.client.post(
            "/v1/events",
            content=orjson.dumps(body),
            headers={**(BATCH if batch else SINGLE), **self.keys[who]},
        )

    def get(self, who: str, url: str, **params: Any) -> Response:
        return self.client.get(url, headers=self.keys[who], params=params)

    def recompute(self) -> None:
        jobs.recompute_dirty_windows(self.factory, 100)

    def filament_kg(self) -> float:
        body = self.get(
            "planner",
            f"/v1/cities/{CITY}/metrics",
            names="input_kg",
            interval="month",
            **{"from": "2026-03-01", "to": "2026-03-31"},
        ).json()
        value = body["series"][0]["points"][0]["value"]
        return float(value or 0)


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    register(factory)
    with transaction(factory) as s:
        other = entries.create_city(
            s, api.CityIn(slug="otherville", name="O", country="NL", timezone="Europe/Amsterdam")
        )
        entries.create_site(s, other, api.SiteIn(slug="lab", name="Lab"))

        def key(role: str, **scope: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys.create(s, role, **scope).secret}"}

        made = {
            "admin": key("admin"),
            "planner": key("planner", city=CITY),
            "lab": key("site", city=CITY, site=SITE),
            "hub": key("site", city=CITY, site=OTHER_SITE),
            "printer": key("device", city=CITY, site=SITE, device=DEVICE),
            "other planner": key("planner", city="otherville"),
            "other lab": key("site", city="otherville", site="lab"),
        }
    settings = settings_for(db_url, auth="required", rate_limit_per_s=0, auth_failure_per_min=0)
    app = create_app(settings, "both", factory=factory, dispatcher=NoDispatch())
    with TestClient(app) as client:
        yield World(client, factory, made)
    engine.dispose()


def typo(world: World) -> None:
    """The lab's 240 kg (meant 2.40) and a good 1 kg; the other city's own event."""
    batch = [
        event([flow(quantity=240)], id="typo"),
        event([flow(quantity=1, ring="beyond")], id="ok"),
    ]
    assert world.post("lab", batch, batch=True).status_code == 202
    other = event([flow(quantity=7)], id="typo", source=ELSEWHERE)
    assert world.post("other lab", other).status_code == 202
    world.recompute()


def replacement(target: str, id: str, kg: float, source: str = LAB) -> dict[str, Any]:
    return {**event([flow(quantity=kg)], id=id, source=source), "supersedes": target}


def retraction(target: str, id: str, source: str = LAB) -> dict[str, Any]:
    return event(
        {"id": target, "reason": "typed kg for g"},
        id=id,
        source=source,
        type="fabcity.event.retracted",
    )


class TestCorrectionsOverHttp:
    def test_the_lab_supersedes_its_typo_and_the_figure_follows(self, world: World) -> None:
        typo(world)
        assert world.filament_kg() == 241.0
        answer = world.post("lab", replacement("typo", "typo-fixed", 2.4))
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
        world.recompute()
        assert world.filament_kg() == pytest.approx(3.4)  # 2.4 + 1

    def test_the_same_correction_twice_counts_once(self, world: World) -> None:
        typo(world)
        fix = replacement("typo", "typo-fixed", 2.4)
        world.post("lab", fix)
        again = world.post("lab", fix)
        assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
        world.recompute()
        assert world.filament_kg() == pytest.approx(3.4)

    def test_an_admin_may_retract_and_so_may_the_printers_site(self, world: World) -> None:
        typo(world)
        assert (
            world.post("printer", event([flow(quantity=5)], id="p1", source=PRINTER)).json()[
                "accepted"
            ]
            == 1
        )
        # The printer's site key speaks for the printer: the correction names its source.
        assert world.post("lab", retraction("p1", "p1-gone", PRINTER)).json()["accepted"] == 1
        assert world.post("admin", retraction("typo", "typo-gone")).json()["accepted"] == 1
        world.recompute()
        assert world.filament_kg() == 1.0

    def test_refusals_are_4xx_with_their_reason(self, world: World) -> None:
        typo(world)
        world.post("lab", retraction("typo", "r1"))
        cases = {
            "no event 'nothing'": ("lab", retraction("nothing", "r2")),
            "is itself a correction": ("lab", retraction("r1", "r3")),
            # Another site's key, another city's key: the source is not theirs to write.
            "outside what this key may write": ("hub", retraction("typo", "r4")),
        }
        for reason, (who, body) in cases.items():
            problem = assert_problem(world.post(who, body), 422)
            assert reason in problem["detail"], problem["detail"]
        other = world.post("other lab", retraction("typo", "r5", LAB))
        assert "outside what this key may write" in assert_problem(other, 422)["detail"]
        # The other city's own `typo` is its own: retracting it changes nothing here.
        assert world.post("other lab", retraction("typo", "r6", ELSEWHERE)).status_code == 202
        world.recompute()
        assert world.filament_kg() == 1.0


class TestWhatAMessageBecame:
    def test_the_event_its_flows_corrections_and_windows(self, world: World) -> None:
        typo(world)
        world.post("lab", replacement("typo", "typo-fixed", 2.4))
        world.recompute()
        original = world.get("lab", f"/v1/events{LAB}/typo")
        assert original.status_code == 200, original.text
        body = original.json()
        assert body["counts"] is False
        assert body["event"]["data"][0]["quantity"] == 240
        assert body["windows"] == []
        assert "correction of it counts instead" in body["why"]
        # What it would derive, not counted: 240 kg of filament, reported by people.
        assert [(f["quantity"], f["unit"], f["counted"], f["state"]) for f in body["flows"]] == [
            (240.0, "kg", False, "reported")
        ]
        [correction] = body["corrections"]
        assert correction | {"received_at": None} == {
            "source": LAB,
            "id": "typo-fixed",
            "kind": "supersede",
            "rank": 1,
            "reason": None,
            "received_at": None,
            "counts": True,
        }
        fixed = world.get("planner", f"/v1/events/{LAB[1:]}/typo-fixed").json()
        assert fixed["counts"] is True
        assert fixed["corrects"] == {"source": LAB, "id": "typo", "kind": "supersede", "rank": 1}
        assert [(f["quantity"], f["counted"]) for f in fixed["flows"]] == [(2.4, True)]
        # 2026-03-10T10:00+01:00 in Madrid: its hour, day, ISO week (from Monday 9 March),
        # month and year.
        windows = {w["interval"]: (w["start"], w["end"]) for w in fixed["windows"]}
        assert windows == {
            "hour": ("2026-03-10T10:00:00+01:00", "2026-03-10T11:00:00+01:00"),
            "day": ("2026-03-10T00:00:00+01:00", "2026-03-11T00:00:00+01:00"),
            "week": ("2026-03-09T00:00:00+01:00", "2026-03-16T00:00:00+01:00"),
            "month": ("2026-03-01T00:00:00+01:00", "2026-04-01T00:00:00+02:00"),
            "year": ("2026-01-01T00:00:00+01:00", "2027-01-01T00:00:00+01:00"),
        }

    def test_a_device_event_shows_the_settings_it_was_derived_with(self, world: World) -> None:
        job = event(
            {
                "status": "completed",
                "started": "2026-03-10T08:00:00+01:00",
                "ended": "2026-03-10T10:00:00+01:00",
                "mass_kg": 0.5,
            },
            id="job-1",
            source=PRINTER,
            type="fabcity.machine.job",
        )
        assert world.post("printer", job).json()["accepted"] == 1
        body = world.get("lab", f"/v1/events{PRINTER}/job-1").json()
        assert body["device_used"]["device"] == DEVICE
        assert body["device_used"]["settings"] == {}
        assert body["device"] == DEVICE
        actions = sorted((f["action"], f["resource"], f["state"]) for f in body["flows"])
        assert ("consume", "filament", "measured") in actions
        assert all(f["counted"] for f in body["flows"])

    def test_other_tenants_events_are_404_not_403(self, world: World) -> None:
        typo(world)
        # The lab's event: the hub's manager and another city's planner find nothing, just as
        # they find nothing at an id that was never used.
        for who in ("hub", "other planner", "other lab"):
            absent = world.get(who, f"/v1/events{LAB}/typo")
            never = world.get(who, f"/v1/events{LAB}/never-posted")
            said = assert_problem(absent, 404)["detail"]
            assert said == assert_problem(never, 404)["detail"].replace("never-posted", "typo")
        assert world.get("other lab", f"/v1/events{ELSEWHERE}/typo").status_code == 200
        assert world.get("admin", f"/v1/events{ELSEWHERE}/typo").status_code == 200
        # A device key is no reader of events.
        assert world.get("printer", "/v1/events").status_code == 403

    def test_each_key_lists_what_it_may_see(self, world: World) -> None:
        typo(world)
        world.post("lab", retraction("typo", "gone"))

        def ids(who: str, **params: Any) -> list[tuple[str, str, bool]]:
            answer = world.get(who, "/v1/events", **params)
            assert answer.status_code == 200, answer.text
            return [(e["source"], e["id"], e["counts"]) for e in answer.json()["items"]]

        mine = [(LAB, "typo", False), (LAB, "ok", True), (LAB, "gone", False)]
        assert sorted(ids("lab")) == sorted(mine)
        assert sorted(ids("planner")) == sorted(mine)
        assert ids("hub") == []
        assert ids("other planner") == [(ELSEWHERE, "typo", True)]
        assert len(ids("admin")) == 4
        assert ids("admin", type="fabcity.event.retracted") == [(LAB, "gone", False)]
        assert ids("admin", source=ELSEWHERE) == [(ELSEWHERE, "typo", True)]
        assert sorted(ids("admin", city=CITY, site=SITE)) == sorted(mine)
        assert ids("admin", city=CITY, site=SITE, device=DEVICE) == []
        # Naming another city is refused as everywhere in the API.
        assert world.get("planner", "/v1/events", city="otherville").status_code == 403
        # Events at 10:00+01:00: a range that ends at 09:00Z (10:00 in Madrid) holds none.
        assert ids("admin", city=CITY, to="2026-03-10T09:00:00Z") == []
        assert len(ids("admin", city=CITY, **{"from": "2026-03-10T09:00:00Z"})) == 3

    def test_pages_follow_the_cursor(self, world: World) -> None:
        batch = [event([flow(quantity=n + 1)], id=f"e{n:02}") for n in range(7)]
        assert world.post("lab", batch, batch=True).json()["accepted"] == 7
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = world.get("planner", "/v1/events", **params).json()
            seen += [e["id"] for e in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == [f"e{n:02}" for n in range(7)]
        assert len(seen) == 7
        assert_problem(world.get("planner", "/v1/events", cursor="bm90LW91cnM"), 422)
        # Cursors and instants that are no row id or no UTC time: 422, never a 500.
        for cursor in ('["\u00b2"]', '["99999999999999999999"]'):
            made = base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")
            assert_problem(world.get("planner", "/v1/events", cursor=made), 422)
        early = world.get("planner", "/v1/events", **{"from": "0001-01-01T00:00:00+01:00"})
        assert "outside years 1 to 9999" in assert_problem(early, 422)["detail"]
