"""Registry entries corrected (PATCH), retired or deleted (DELETE), and resources added, through
the API on SQLite and PostgreSQL: every change is logged, and a change that moves figures has
the hours it moves recomputed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import Event
from fabcity.registry import changes as registry
from fabcity.registry import entries, keys
from schemas import api
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.api import CityClient, city_client, ingest
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, count_rows, event, flow, register
from tests.support.race import Beside
from workers import jobs
from workers.dispatch import NoDispatch

LAB = f"/v1/cities/{CITY}/sites/{SITE}"
PRINTER = f"{LAB}/devices/{DEVICE}"


@pytest.fixture
def client(db_url: str) -> Iterator[CityClient]:
    with city_client(db_url) as test_client:
        yield test_client


def day_values(client: CityClient, name: str, first: str, last: str) -> list[Any]:
    response = client.get(
        f"/v1/cities/{CITY}/metrics",
        params={"names": name, "from": first, "to": last, "interval": "day"},
    )
    assert response.status_code == 200, response.text
    [series] = response.json()["series"]
    return [p["value"] for p in series["points"]]


def changes(client: CityClient) -> list[dict[str, Any]]:
    response = client.get(f"/v1/cities/{CITY}/changes")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_a_site_gets_its_coordinates_and_the_change_is_logged(client: CityClient) -> None:
    # Posting the site again to add them was a 409: PATCH corrects it in place.
    again = client.post(f"/v1/cities/{CITY}/sites", json={"slug": SITE, "name": "Lab"})
    assert again.status_code == 409
    patched = client.patch(LAB, json={"latitude": 41.3968, "longitude": 2.1943})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["latitude"], patched.json()["longitude"]) == (41.3968, 2.1943)
    listed = client.get(f"/v1/cities/{CITY}/sites").json()["items"]
    assert [s["latitude"] for s in listed if s["slug"] == SITE] == [41.3968]
    [change] = changes(client)
    assert change["entry"] == "site" and change["name"] == f"/{CITY}/{SITE}"
    assert change["action"] == "update" and change["actor"] == "admin"
    assert change["before"] == {"latitude": None, "longitude": None}
    assert change["after"] == {"latitude": 41.3968, "longitude": 2.1943}
    # Clearing a coordinate is a change too; a name cannot be cleared.
    assert client.patch(LAB, json={"longitude": None}).json()["longitude"] is None
    refused = client.patch(LAB, json={"name": None})
    assert refused.status_code == 422 and "may not be null" in refused.json()["detail"]


def test_a_new_time_zone_moves_stored_events_to_their_local_day(client: CityClient) -> None:
    # 20:00+01:00 on 10 March is 19:00 UTC: in Madrid 10 March, in Tokyo (UTC+9, no summer
    # time) 04:00 on 11 March. 2 kg consumed move from the 10th to the 11th.
    ingest(client, [event(flow(quantity=2.0), time="2026-03-10T20:00:00+01:00")])
    assert day_values(client, "input_kg", "2026-03-10", "2026-03-11") == [2.0, None]
    patched = client.patch(f"/v1/cities/{CITY}", json={"timezone": "Asia/Tokyo"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["timezone"] == "Asia/Tokyo"
    jobs.recompute_dirty_windows(client.factory, 100)
    assert day_values(client, "input_kg", "2026-03-10", "2026-03-11") == [None, 2.0]
    [change] = changes(client)
    assert change["before"] == {"timezone": "Europe/Madrid"}
    assert change["after"] == {"timezone": "Asia/Tokyo"}
    assert change["windows"] == 2  # the hour it left and the hour it entered
    # A new event lands in Tokyo's day as well.
    ingest(client, [event(flow(quantity=1.0), time="2026-03-10T20:30:00+01:00")])
    assert day_values(client, "input_kg", "2026-03-10", "2026-03-11") == [None, 3.0]


def test_new_device_settings_derive_its_stored_events_again(client: CityClient) -> None:
    # 100 m of 1.75 mm PLA at 1.24 g/cm³: π × 0.0875² cm² × 10,000 cm × 1.24 = 298.255 g.
    job = {
        "status": "completed",
        "started": "2026-03-10T09:00:00+01:00",
        "ended": "2026-03-10T10:00:00+01:00",
        "material": "PLA",
        "length_mm": 100_000,
    }
    ingest(client, [event(job, type="fabcity.machine.job", source=f"/{CITY}/{SITE}/{DEVICE}")])
    [before] = day_values(client, "input_kg", "2026-03-10", "2026-03-10")
    assert before == pytest.approx(0.298255, abs=1e-6)
    patched = client.patch(PRINTER, json={"settings": {"density_g_cm3": 2.48}})
    assert patched.status_code == 200, patched.text
    jobs.recompute_dirty_windows(client.factory, 100)
    [after] = day_values(client, "input_kg", "2026-03-10", "2026-03-10")
    assert after == pytest.approx(0.59651, abs=1e-6)  # twice the density, twice the mass
    [change] = changes(client)
    assert change["entry"] == "device" and change["after"] == {"settings": {"density_g_cm3": 2.48}}
    assert change["windows"] == 1
    # A density that cannot be read is refused (it was stored as given, and failed each job
    # the device sent after), and nothing changes.
    for density in ("heavy", 0, -1.24, 1e300):
        bad = client.patch(PRINTER, json={"settings": {"density_g_cm3": density}})
        assert bad.status_code == 422, bad.text
        assert "density_g_cm3" in bad.json()["detail"]
    assert len(changes(client)) == 1


def test_a_retracted_event_stays_out_when_its_device_is_derived_again(
    client: CityClient,
) -> None:
    # Two scale weighings in: 2 kg and 5 kg (the 5 a slip, retracted). New settings derive
    # the device's events again: 2 kg of wood still, not 7.
    source = f"/{CITY}/{SITE}/{DEVICE}"
    weighed = [
        event({"net_kg": 2.0, "direction": "in"}, id="w1", type="fabcity.scale.reading",
              source=source),
        event({"net_kg": 5.0, "direction": "in"}, id="w2", type="fabcity.scale.reading",
              source=source),
    ]  # fmt: skip
    ingest(client, weighed)
    ingest(client, [event({"id": "w2"}, id="r1", type="fabcity.event.retracted", source=source)])
    assert day_values(client, "input_kg", "2026-03-10", "2026-03-10") == [2.0]
    patched = client.patch(PRINTER, json={"settings": {"resource": "wood"}})
    assert patched.status_code == 200, patched.text
    jobs.recompute_dirty_windows(client.factory, 100)
    assert day_values(client, "input_kg", "2026-03-10", "2026-03-10") == [2.0]
    by = client.get(
        f"/v1/cities/{CITY}/metrics",
        params={"names": "input_kg", "from": "2026-03-10", "to": "2026-03-10",
                "group_by": "resource"},
    ).json()  # fmt: skip
    assert {s["key"]: s["points"][0]["value"] for s in by["series"]} == {"wood": 2.0}


def test_a_retired_device_keeps_its_figures_and_refuses_new_events(client: CityClient) -> None:
    source = f"/{CITY}/{SITE}/{DEVICE}"
    ingest(client, [event(flow(quantity=1.5), source=source)])
    removed = client.delete(PRINTER)
    assert removed.status_code == 200, removed.text
    assert removed.json()["outcome"] == "retired" and removed.json()["retired_at"]
    # Kept, with its figures; listed with the date it was retired.
    [device] = client.get(f"{LAB}/devices").json()["items"]
    assert device["retired_at"] is not None
    assert day_values(client, "input_kg", "2026-03-10", "2026-03-10") == [1.5]
    # Its new events are refused, by index, with the reason; its site's are not.
    response = client.post(
        "/v1/events",
        json=[event(flow(), source=source), event(flow(), source=f"/{CITY}/{SITE}")],
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 1
    [rejected] = body["rejected"]
    assert rejected["index"] == 0 and "retired" in rejected["error"]
    # A retired device is not corrected any more; retiring it again changes nothing.
    assert client.patch(PRINTER, json={"name": "Old printer"}).status_code == 409
    assert client.delete(PRINTER).json()["outcome"] == "retired"
    assert [c["action"] for c in changes(client)] == ["retire"]


def test_an_entry_nothing_refers_to_is_deleted(client: CityClient) -> None:
    hub = f"/v1/cities/{CITY}/sites/{OTHER_SITE}"
    assert client.post(f"{hub}/devices", json={"slug": "scale", "name": "Scale"}).status_code == 201
    removed = client.delete(hub)
    assert removed.status_code == 200, removed.text
    assert removed.json()["outcome"] == "deleted"
    assert client.get(f"{hub}/devices").status_code == 404
    sites = [s["slug"] for s in client.get(f"/v1/cities/{CITY}/sites").json()["items"]]
    assert sites == [SITE]
    # Its slug is free again, and the deletion is in the log with what it was.
    assert client.post(f"/v1/cities/{CITY}/sites", json={"slug": OTHER_SITE, "name": "Hub 2"})
    [change] = changes(client)
    assert change["action"] == "delete" and change["before"]["name"] == "Hub"


def test_a_retired_site_counts_as_active_until_it_was_retired(client: CityClient) -> None:
    # The lab reports on 9 and 11 March, the hub on 9 March only. The hub retired on 10 March
    # at noon: on the 9th both were active and reported (2/2); on the 11th only the lab was
    # active, and it reported (1/1, where the retired hub would have made it 1/2).
    lab, hub = f"/{CITY}/{SITE}", f"/{CITY}/{OTHER_SITE}"
    ingest(client, [event(flow(), source=lab, time="2026-03-09T10:00:00Z"),
                    event(flow(), source=hub, time="2026-03-09T11:00:00Z"),
                    event(flow(), source=lab, time="2026-03-11T10:00:00Z")])  # fmt: skip
    assert client.delete(f"/v1/cities/{CITY}/sites/{OTHER_SITE}").json()["outcome"] == "retired"
    with transaction(client.factory) as s:
        retired = entries.get_site(s, entries.get_city(s, CITY), OTHER_SITE)
        retired.retired_at = datetime(2026, 3, 10, 12, tzinfo=UTC)
    coverage = day_values(client, "reporting_coverage", "2026-03-09", "2026-03-11")
    assert coverage[0] == 1.0 and coverage[2] == 1.0
    # The 10th: no event, and 2 sites active when it began (the hub retired at its noon).
    response = client.get(
        f"/v1/cities/{CITY}/metrics",
        params={"names": "reporting_coverage", "from": "2026-03-10", "to": "2026-03-11"},
    )
    points = response.json()["series"][0]["points"]
    assert [p["coverage"]["sites_active"] for p in points] == [2, 1]
    summary = client.get(
        f"/v1/cities/{CITY}/summary", params={"from": "2026-03-11", "to": "2026-03-11"}
    )
    assert summary.status_code == 200, summary.text
    assert summary.json()["coverage"]["sites_active"] == 1


def test_what_cannot_be_recomputed_honestly_is_refused(client: CityClient) -> None:
    other = {"slug": "elsewhere", "name": "Elsewhere", "country": "DE", "timezone": "Europe/Berlin"}
    assert client.post("/v1/cities", json=other).status_code == 201
    moved = client.patch(LAB, json={"city": "elsewhere"})
    assert moved.status_code == 422
    assert "retire this one" in moved.json()["detail"]
    # Saying its own city is no move.
    assert client.patch(LAB, json={"city": CITY}).status_code == 200
    # Slugs are in every event's source and every key: they do not change.
    assert client.patch(LAB, json={"slug": "lab2"}).status_code == 422
    assert client.patch(f"/v1/cities/{CITY}", json={"slug": "x"}).status_code == 422
    assert changes(client) == []


@pytest.mark.parametrize(
    "body",
    [
        {"population": -1},
        {"population": 10**12},
        {"population": 1.5},
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": "x" * 300},
        {"country": "Spain"},
        {"name": "a\x00b"},
        {"name": ""},
    ],
)
def test_absurd_city_values_are_refused(client: CityClient, body: dict[str, Any]) -> None:
    response = client.patch(f"/v1/cities/{CITY}", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get(f"/v1/cities/{CITY}").json()["timezone"] == "Europe/Madrid"


def test_absurd_site_and_device_values_are_refused(client: CityClient) -> None:
    site_bodies: list[dict[str, Any]] = [
        {"latitude": 91}, {"longitude": -181}, {"kind": "castle"}, {"latitude": "n"},
    ]  # fmt: skip
    for body in site_bodies:
        assert client.patch(LAB, json=body).status_code == 422, body
    device_bodies: list[dict[str, Any]] = [{"adapter": "telepathy"}, {"settings": []}, {"kind": ""}]
    for body in device_bodies:
        assert client.patch(PRINTER, json=body).status_code == 422, body
    assert client.patch(f"{LAB}/devices/nothing", json={"name": "x"}).status_code == 404
    assert changes(client) == []


def test_a_city_with_events_is_retired_and_refuses_them(client: CityClient) -> None:
    ingest(client, [event(flow())])
    removed = client.delete(f"/v1/cities/{CITY}")
    assert removed.json()["outcome"] == "retired"
    response = client.post(
        "/v1/events", json=event(flow()), headers={"content-type": "application/cloudevents+json"}
    )
    [rejected] = response.json()["rejected"]
    assert "city 'testville' was retired" in rejected["error"]
    assert client.get(f"/v1/cities/{CITY}").json()["retired_at"] is not None


def test_plywood_can_be_added_and_counted(client: CityClient) -> None:
    refused = client.post(
        "/v1/events",
        json=event(flow(resource="plywood", quantity=3.0)),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert "unknown resource 'plywood'" in refused.json()["rejected"][0]["error"]
    # Read once before: the query of these sums is built once per shape and kept, with the
    # mass resources' names written in; a resource added must be in the next one.
    assert day_values(client, "input_kg", "2026-03-10", "2026-03-10") == [None]
    body = {"name": "plywood", "dimension": "mass", "mfa_category": "MF1"}
    added = client.post("/v1/resources", json=body)
    assert added.status_code == 201, added.text
    assert added.json() == {
        "name": "plywood", "unit": "kg", "dimension": "mass", "mfa_category": "MF1",
        "secondary": False,
    }  # fmt: skip
    ingest(client, [event(flow(resource="plywood", quantity=3000.0, unit="g"))])
    assert day_values(client, "input_kg", "2026-03-10", "2026-03-10") == [3.0]
    assert client.post("/v1/resources", json=body).status_code == 409
    names = [r["name"] for r in client.get("/v1/resources", params={"limit": 1000}).json()["items"]]
    assert "plywood" in names


@pytest.mark.parametrize(
    "body",
    [
        {"name": "plywood", "dimension": "mass", "mfa_category": "MF9"},
        {"name": "plywood", "dimension": "mass", "mfa_category": "mf1"},
        {"name": "solar", "dimension": "energy", "mfa_category": "MF4"},
        {"name": "plywood", "dimension": "area"},
        {"name": "Ply Wood", "dimension": "mass"},
        {"name": "", "dimension": "mass"},
        {"name": "plywood", "dimension": "mass", "unit": "kg"},
        {"name": "plywood", "dimension": "mass", "secondary": "yes"},
    ],
)
def test_a_resource_that_does_not_hold_together_is_refused(
    client: CityClient, body: dict[str, Any]
) -> None:
    response = client.post("/v1/resources", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_only_an_admin_changes_the_registry_and_only_its_city_is_seen(db_url: str) -> None:
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    register(factory)
    with transaction(factory) as s:
        other = entries.create_city(s, api.CityIn(slug="rival", name="Rival", country="FR"))
        entries.create_site(s, other, api.SiteIn(slug="shop", name="Shop"))
        admin = keys.create(s, "admin").secret
        planner = keys.create(s, "planner", city=CITY).secret
        site = keys.create(s, "site", city=CITY, site=SITE).secret
        rival = keys.create(s, "site", city="rival", site="shop").secret
    app = create_app(
        settings_for(db_url, auth="required"), factory=factory, dispatcher=NoDispatch()
    )

    def auth(secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    with TestClient(app) as c:
        for secret in (planner, site, rival):
            assert c.patch(LAB, json={"name": "Mine"}, headers=auth(secret)).status_code == 403
            assert c.delete(PRINTER, headers=auth(secret)).status_code == 403
            assert (
                c.patch(
                    f"/v1/cities/{CITY}", json={"population": 1}, headers=auth(secret)
                ).status_code
                == 403
            )
            resource = {"name": "plywood", "dimension": "mass"}
            assert c.post("/v1/resources", json=resource, headers=auth(secret)).status_code == 403
        # A planner reads its own city's log, not another's.
        assert c.get(f"/v1/cities/{CITY}/changes", headers=auth(planner)).status_code == 200
        assert c.get("/v1/cities/rival/changes", headers=auth(planner)).status_code == 403
        done = c.patch(LAB, json={"name": "Lab one"}, headers=auth(admin))
        assert done.status_code == 200, done.text
        [change] = c.get(f"/v1/cities/{CITY}/changes", headers=auth(planner)).json()["items"]
        assert change["actor"].startswith("key ") and change["actor"].endswith("(admin)")
    engine.dispose()


def test_a_retired_printer_hands_its_topic_to_the_one_that_replaces_it(
    client: CityClient,
) -> None:
    octoprint = {"slug": "mk3", "name": "MK3", "adapter": "octoprint"}
    body = {**octoprint, "settings": {"base_topic": "octoPrint"}}
    assert client.post(f"{LAB}/devices", json=body).status_code == 201
    ingest(client, [event(flow(), source=f"/{CITY}/{SITE}/mk3")])
    # Two active devices on one topic would count its messages twice.
    twin = {**body, "slug": "mk4", "name": "MK4"}
    assert client.post(f"{LAB}/devices", json=twin).status_code == 409
    assert client.delete(f"{LAB}/devices/mk3").json()["outcome"] == "retired"
    with transaction(client.factory) as s:
        # Still read, so that its messages are refused as a retired device's, with the reason.
        assert [d.source for d in entries.adapter_devices(s, "octoprint")] == [
            f"/{CITY}/{SITE}/mk3"
        ]
    assert client.post(f"{LAB}/devices", json=twin).status_code == 201
    with transaction(client.factory) as s:
        assert [d.source for d in entries.adapter_devices(s, "octoprint")] == [
            f"/{CITY}/{SITE}/mk4"
        ]


def test_a_new_time_zone_keeps_a_repeated_hour_two_hours(db_url: str) -> None:
    # In UTC, 00:30Z and 01:30Z on 25 October 2026 are two hours. In Madrid both read 02:30,
    # first at +02:00, then at +01:00 after the clocks go back: still two windows, 1 kg each.
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    register(factory, timezone="UTC")
    app = create_app(settings_for(db_url), factory=factory, dispatcher=NoDispatch())
    with CityClient(app) as client:
        client.factory = factory
        ingest(
            client,
            [
                event(flow(), time="2026-10-25T00:30:00Z"),
                event(flow(), time="2026-10-25T01:30:00Z"),
            ],
        )
        patched = client.patch(f"/v1/cities/{CITY}", json={"timezone": "Europe/Madrid"})
        assert patched.status_code == 200, patched.text
        jobs.recompute_dirty_windows(factory, 100)
        response = client.get(
            f"/v1/cities/{CITY}/metrics",
            params={"names": "input_kg", "from": "2026-10-25", "to": "2026-10-25",
                    "interval": "hour"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        [series] = response.json()["series"]
        values = [p["value"] for p in series["points"] if p["value"] is not None]
        assert values == [1.0, 1.0]
    engine.dispose()


def test_a_city_nothing_refers_to_is_deleted_with_what_it_held(client: CityClient) -> None:
    empty = {"slug": "empty", "name": "Empty", "country": "PT", "timezone": "Europe/Lisbon"}
    assert client.post("/v1/cities", json=empty).status_code == 201
    assert client.post("/v1/cities/empty/sites", json={"slug": "a", "name": "A"}).status_code == 201
    device = {"slug": "d", "name": "D"}
    assert client.post("/v1/cities/empty/sites/a/devices", json=device).status_code == 201
    table = {"sectors": [{"name": "food", "ratio": "0.5", "weight": 1}]}
    assert client.put("/v1/cities/empty/statistics/2024", json=table).status_code == 200
    hook = {"url": "https://example.org/hook", "city": "empty"}
    made = client.post("/v1/subscriptions", json=hook)
    assert made.status_code == 201, made.text
    # A webhook follows it: delete that first, rather than leave it following nothing.
    refused = client.delete("/v1/cities/empty")
    assert refused.status_code == 409 and "subscription" in refused.json()["detail"]
    assert client.delete(f"/v1/subscriptions/{made.json()['id']}").status_code == 204
    removed = client.delete("/v1/cities/empty")
    assert removed.status_code == 200, removed.text
    assert removed.json()["outcome"] == "deleted"
    assert client.get("/v1/cities/empty").status_code == 404
    # The slug is free again.
    assert client.post("/v1/cities", json=empty).status_code == 201


def test_a_city_moving_zone_answers_busy_for_its_events_and_not_for_others(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While testville's events move to Tokyo's time, a batch of testville's waits for the move
    (here 0.3 s, not the 10 s an operator gets), then is refused with a 503 that says to retry:
    nothing stored, nothing acknowledged. Another city's batch is not held up. After the move
    the retried batch is stored, in the new zone."""
    monkeypatch.setattr(entries, "REGISTRY_WAIT_S", 0.3)
    batch = {"content-type": "application/cloudevents-batch+json"}
    mine = event([flow()], id="moving-1", time="2026-03-10T20:30:00Z")
    theirs = event([flow()], id="rival-1", source="/rival/shop")
    with city_client(pg_url) as client:
        with transaction(client.factory) as s:
            rival = entries.create_city(s, api.CityIn(slug="rival", name="Rival", country="FR"))
            entries.create_site(s, rival, api.SiteIn(slug="shop", name="Shop"))
        changing = client.factory()
        try:
            city = entries.get_city(changing, CITY)
            registry.update_city(changing, city, api.CityPatch(timezone="Asia/Tokyo"), "test")
            refused = client.post("/v1/events", content=orjson.dumps([mine]), headers=batch)
            other = client.post("/v1/events", content=orjson.dumps([theirs]), headers=batch)
        finally:
            changing.commit()
            changing.close()
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["type"].endswith("/busy")
        assert "testville" in refused.json()["detail"]
        assert "nothing was stored" in refused.json()["detail"]
        assert other.status_code == 202, other.text
        assert count_rows(client.factory, Event, Event.event_id == "moving-1") == 0

        again = client.post("/v1/events", content=orjson.dumps([mine]), headers=batch)
        assert again.status_code == 202, again.text
        with transaction(client.factory) as s:
            # By hand: 20:30 UTC on 10 March is 05:30 on the 11th in Tokyo (UTC+9).
            stored = s.execute(select(Event.day, Event.hour).where(Event.event_id == "moving-1"))
            assert stored.all() == [(date(2026, 3, 11), 5)]


@pytest.mark.parametrize("holder", ["rebuild of every city", "another zone change"])
def test_a_change_behind_a_long_hold_answers_busy_and_changes_nothing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, holder: str
) -> None:
    """A rebuild, or another change of the city, holds it for minutes. A zone change (or a
    device's, or a removal) behind it waits the batches' time (here 0.3 s), then is refused
    with a 503 to retry: no API thread held for minutes, and no client left to guess whether
    its change was made after it gave up. Once the holder is done, the change goes through."""
    monkeypatch.setattr(entries, "REGISTRY_WAIT_S", 0.3)
    with city_client(pg_url) as client:
        holding = client.factory()
        try:
            if holder == "rebuild of every city":
                entries.hold_every_city(holding)
            else:
                city = entries.get_city(holding, CITY)
                registry.update_city(holding, city, api.CityPatch(timezone="Asia/Tokyo"), "test")
            answers: list[Any] = []

            def change() -> None:
                answers.append(
                    client.patch(f"/v1/cities/{CITY}", json={"timezone": "America/Lima"})
                )
                answers.append(client.delete(f"/v1/cities/{CITY}/sites/{OTHER_SITE}"))

            # Given far longer than its 0.3 s twice: without the bound it waits for the holder.
            changing = Beside(change, patience=10)
        finally:
            holding.commit()
            holding.close()
        changing.finish()
        assert not changing.waited
        assert len(answers) == 2
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "5"
            assert answer.json()["type"].endswith("/busy")
            assert "nothing was changed" in answer.json()["detail"]
        expected = "Asia/Tokyo" if holder == "another zone change" else "Europe/Madrid"
        assert client.get(f"/v1/cities/{CITY}").json()["timezone"] == expected
        sites = client.get(f"/v1/cities/{CITY}/sites").json()
        assert OTHER_SITE in {site["slug"] for site in sites["items"]}

        again = client.patch(f"/v1/cities/{CITY}", json={"timezone": "America/Lima"})
        assert again.status_code == 200, again.text
        assert client.get(f"/v1/cities/{CITY}").json()["timezone"] == "America/Lima"
