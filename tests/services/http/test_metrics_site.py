"""Drilling down from the city to a site to a device: `site=` narrows the metric series to one
site (its flows, its events, its coverage), and `group_by=device` with it splits the site by
device. On SQLite and PostgreSQL; and a key from elsewhere cannot read it."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.registry import entries, keys
from schemas import api
from tests.services.http.support import (
    HUB,
    LAB,
    METRICS_URL,
    PRINTER,
    MakeClient,
    assert_problem,
    metrics,
    series,
)
from tests.support.api import CityClient, city_client, ingest
from tests.support.city import CITY, DEVICE, SITE, event, flow

DAY = "2026-03-10"
NAMES = "input_kg,local_input_share,produced_count,reporting_coverage"


def seed(client: CityClient) -> None:
    """On one day: the lab posts 6 kg from the city and 4 kg from beyond, its printer 2 kg from
    the city and 3 parts; the hub 5 kg from the region."""
    ingest(client, [
        event([flow(quantity=6, ring="city"), flow(quantity=4, ring="beyond")], source=LAB),
        event([flow(quantity=2, ring="city"), flow("produce", "part", 3, "count")],
              source=PRINTER),
        event([flow("consume", "wood", 5, "kg", ring="region")], source=HUB),
    ])  # fmt: skip


def value(body: dict[str, object], name: str, key: str | None = None) -> object:
    [point] = series(body, name, key)
    return point["value"]


def test_a_site_and_its_devices_read_apart_from_the_city(db_url: str) -> None:
    with city_client(db_url) as client:
        seed(client)
        city = metrics(client, DAY, DAY, NAMES)
        assert value(city, "input_kg") == 17  # 6 + 4 + 2 + 5
        assert value(city, "reporting_coverage") == 1  # both sites reported
        assert series(city, "input_kg")[0]["coverage"]["events"] == 3

        lab = metrics(client, DAY, DAY, NAMES, site=SITE)
        assert value(lab, "input_kg") == 12  # 6 + 4 + 2, not the hub's 5
        assert value(lab, "local_input_share") == pytest.approx(8 / 12)  # 6 + 2 from the city
        assert value(lab, "produced_count") == 3
        assert value(lab, "reporting_coverage") == 1  # the one site asked for reported
        [point] = series(lab, "input_kg")
        assert point["coverage"]["events"] == 2  # the lab's and its printer's, not the hub's

        hub = metrics(client, DAY, DAY, NAMES, site="hub")
        assert value(hub, "input_kg") == 5 and value(hub, "local_input_share") == 0
        assert value(hub, "produced_count") is None  # nothing made there: not recorded, not 0
        assert series(hub, "input_kg")[0]["coverage"]["events"] == 1

        devices = metrics(client, DAY, DAY, NAMES, site=SITE, group_by="device")
        assert value(devices, "input_kg", DEVICE) == 2
        assert value(devices, "input_kg", "(site reports)") == 10
        assert {s["key"] for s in devices["series"]} == {DEVICE, "(site reports)"}

        exported = client.get(
            METRICS_URL, params={"names": "input_kg", "from": DAY, "to": DAY, "site": "hub",
                                 "format": "csv"},
        )  # fmt: skip
        assert exported.status_code == 200, exported.text
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [float(r["value"]) for r in rows] == [5]


@pytest.mark.parametrize("interval", ["hour", "day", "month"])
def test_two_sites_printers_are_two_devices_of_the_city(db_url: str, interval: str) -> None:
    """A device's slug is its site's own: with a printer at the hub too, the city by device
    has the lab's printer (2 kg) and the hub's (7 kg) apart, and each site's own reports
    apart (the lab's 10 kg, the hub's 5), in the series (sums read in SQL; and cells, for a
    metric computed from them) and in the breakdown. Merged, they were 9 kg of one
    `printer` and 15 of one `(site reports)`."""
    with city_client(db_url) as client:
        with transaction(client.factory) as s:
            hub = entries.get_site(s, entries.get_city(s, CITY), "hub")
            entries.create_device(s, hub, api.DeviceIn(slug=DEVICE, name="Hub printer"))
        seed(client)
        ingest(client, [event([flow(quantity=7, ring="region")], source=f"{HUB}/{DEVICE}")])
        expected = {
            f"{SITE}/{DEVICE}": 2, f"hub/{DEVICE}": 7,
            f"{SITE}/(site reports)": 10, "hub/(site reports)": 5,
        }  # fmt: skip
        hours = "input_kg,utilization" if interval == "hour" else "input_kg"
        by_device = metrics(client, DAY, DAY, hours, interval=interval, group_by="device")
        found = {
            s["key"]: sum(p["value"] or 0 for p in s["points"])
            for s in by_device["series"]
            if s["name"] == "input_kg"
        }
        assert found == expected
        if interval == "hour":  # utilization by the hour is computed from cells
            keys = {s["key"] for s in by_device["series"] if s["name"] == "utilization"}
            assert keys == set(expected)
        parts = client.get(
            f"/v1/cities/{CITY}/breakdown",
            params={"names": "input_kg", "from": DAY, "to": DAY, "group_by": "device"},
        )
        assert parts.status_code == 200, parts.text
        assert {p["key"]: p["value"] for p in parts.json()["parts"]} == expected
        # Within one site, a device is its slug, as the dashboard's drill-down asks.
        hub_devices = metrics(client, DAY, DAY, "input_kg", site="hub", group_by="device")
        assert value(hub_devices, "input_kg", DEVICE) == 7
        assert value(hub_devices, "input_kg", "(site reports)") == 5


def test_an_unknown_site_is_a_404_not_a_quiet_one(db_url: str) -> None:
    with city_client(db_url) as client:
        seed(client)
        for fmt in ("json", "csv"):
            response = client.get(
                METRICS_URL, params={"from": DAY, "to": DAY, "site": "nowhere", "format": fmt}
            )
            assert_problem(response, 404)
        # odd values are refused as such, never a 500 (PostgreSQL refuses a NUL in a string)
        for odd in ("", "\x00", "lab\x00", "ü", "x" * 65):
            response = client.get(METRICS_URL, params={"from": DAY, "to": DAY, "site": odd})
            assert response.status_code in (400, 404, 422), (odd, response.text)


def test_a_key_from_elsewhere_cannot_read_a_site(
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
    params = {"from": DAY, "to": DAY, "site": SITE}
    assert client.get(METRICS_URL, params=params, headers=planner).status_code == 200
    # a lab's key reads its events, not the city's figures, even narrowed to its own site
    assert_problem(client.get(METRICS_URL, params=params, headers=lab), 403)
    assert_problem(client.get(METRICS_URL, params=params, headers=elsewhere), 403)
    assert client.get(METRICS_URL, params=params).status_code == 401
