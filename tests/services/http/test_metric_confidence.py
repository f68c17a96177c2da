"""Figures a planner can defend, through the API on SQLite and PostgreSQL: DIDO's and FCI's
range on thin data, no DIDO in a window without events, a confidence on every value, windows
not over yet marked `partial` (JSON, CSV, NGSI-LD), and waste per person."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from fabcity.core import models
from fabcity.core.db import transaction
from fabcity.registry import entries
from schemas import api
from tests.support.api import CityClient, city_client, ingest
from tests.support.city import CITY, OTHER_SITE, SITE, event, flow

ZONE = ZoneInfo("Europe/Madrid")  # the test city's
DAY = "2026-03-10"
FCI_TERMS = "local_input_share,diversion_rate,reporting_coverage,open_design_share,dido,pito,fci"


@pytest.fixture
def client(db_url: str) -> Iterator[CityClient]:
    with city_client(db_url) as test_client:
        yield test_client


def points(
    client: CityClient, names: str, first: str, last: str, **params: str
) -> dict[str, list[dict[str, Any]]]:
    response = client.get(
        f"/v1/cities/{params.pop('city', CITY)}/metrics",
        params={"names": names, "from": first, "to": last, **params},
    )
    assert response.status_code == 200, response.text
    return {s["name"]: s["points"] for s in response.json()["series"]}


def figures(client: CityClient, first: str, last: str, city: str = CITY) -> dict[str, Any]:
    response = client.get(f"/v1/cities/{city}/summary", params={"from": first, "to": last})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body | {"by_name": {f["name"]: f for f in body["figures"]}}


def city_with_sites(client: CityClient, slug: str, sites: int) -> None:
    with transaction(client.factory) as s:
        city = entries.create_city(
            s, api.CityIn(slug=slug, name=slug.title(), country="ES", timezone="Europe/Madrid")
        )
        for i in range(sites):
            entries.create_site(s, city, api.SiteIn(slug=f"s{i}", name=f"Site {i}"))


def test_the_check_of_metrics_md(client: CityClient) -> None:
    # METRICS.md, "Confidence": one event from the city's only site, in a past day, with two
    # flows: 1 kg of wood from the city consumed, 1 kg of wood discarded to be recycled.
    city_with_sites(client, "solo", 1)
    ingest(client, [event([flow("consume", "wood", 1, "kg", ring="city"),
                           flow("discard", "wood", 1, "kg", fate="recycle")],
                          source="/solo/s0", time=f"{DAY}T10:00:00+01:00")])  # fmt: skip
    got = {n: p[0] for n, p in points(client, FCI_TERMS, DAY, DAY, city="solo").items()}
    assert got["local_input_share"]["value"] == 1
    assert got["diversion_rate"]["value"] == 1
    assert got["reporting_coverage"]["value"] == 1
    assert got["open_design_share"]["value"] is None  # nothing made: not recorded
    # DIDO: the mean of the three recorded terms, 1; with open_design_share at 0, 3/4; at 1, 1.
    assert got["dido"]["value"] == 1 and got["dido"]["range"] == [0.75, 1]
    assert got["dido"]["state"] == "modelled"
    assert got["pito"]["value"] == 0  # nothing from beyond, nothing landfilled or burnt
    # FCI = DIDO × (1 − 0): 1, and its range DIDO's range × 1.
    assert got["fci"]["value"] == 1 and got["fci"]["range"] == [0.75, 1]
    for name, point in got.items():
        assert point["partial"] is False, name
        if point["value"] is not None:
            assert point["confidence"] == "low", name  # 1 event: fewer than 10
    assert got["open_design_share"]["confidence"] is None  # nothing to trust or doubt
    # The summary of that day says the same.
    summary = figures(client, DAY, DAY, "solo")
    fci = summary["by_name"]["fci"]
    assert (fci["value"], fci["range"], fci["confidence"]) == (1, [0.75, 1], "low")
    assert summary["by_name"]["dido"]["range"] == [0.75, 1]
    assert summary["partial"] is False


def test_fci_takes_didos_range_times_one_minus_pito(client: CityClient) -> None:
    # The lab (one of two sites) takes 1 kg from the city and 1 kg from beyond; nothing made,
    # nothing thrown away. Recorded terms: local_input_share 1/2, reporting_coverage 1/2.
    # DIDO 1/2, range [(1/2 + 1/2) / 4, (1/2 + 1/2 + 2) / 4] = [1/4, 3/4]; PITO 1/2.
    # FCI 1/2 × 1/2 = 1/4, range [1/8, 3/8].
    ingest(client, [event([flow(quantity=1, ring="city"), flow(quantity=1, ring="beyond")])])
    got = {n: p[0] for n, p in points(client, "dido,pito,fci", DAY, DAY).items()}
    assert got["dido"]["value"] == 0.5 and got["dido"]["range"] == [0.25, 0.75]
    assert got["pito"]["value"] == 0.5
    assert got["fci"]["value"] == 0.25 and got["fci"]["range"] == [0.125, 0.375]
    assert got["fci"]["terms"] == ["local_input_share", "reporting_coverage"]


def test_without_pito_fci_lies_between_0_and_didos_upper_bound(client: CityClient) -> None:
    # Four parts made from an open design at the lab, nothing else: open_design_share 1,
    # reporting_coverage 1/2, the two other terms not recorded; no inputs, no waste: no PITO.
    # DIDO 3/4, range [1.5 / 4, 3.5 / 4]; FCI no number, the range [0, 3.5 / 4].
    design = "https://example.org/okh/stool.toml"
    ingest(client, [event([flow("produce", "part", 4, "count", design=design)])])
    got = {n: p[0] for n, p in points(client, "dido,pito,fci", DAY, DAY).items()}
    assert got["dido"]["value"] == 0.75 and got["dido"]["range"] == [0.375, 0.875]
    assert got["pito"]["value"] is None
    assert got["fci"]["value"] is None and got["fci"]["range"] == [0, 0.875]
    assert "PITO" in got["fci"]["reason"]


def test_a_window_without_events_has_no_dido_and_no_fci(client: CityClient) -> None:
    # Events on the 10th only. The 11th had none: its reporting coverage is a real 0 of 2
    # sites, but a DIDO of that alone, or an FCI "0.00 – 0.00", would say the city made
    # nothing locally; both are null with the reason.
    ingest(client, [event([flow(quantity=1, ring="city")])])
    got = points(client, "reporting_coverage,dido,fci", DAY, "2026-03-11")
    assert got["reporting_coverage"][1]["value"] == 0
    for name in ("dido", "fci"):
        quiet = got[name][1]
        assert quiet["value"] is None and quiet["range"] is None, name
        assert quiet["reason"] == "no events in this window", name
        assert quiet["confidence"] is None
        assert got[name][0]["value"] is not None
    summary = figures(client, "2026-03-12", "2026-03-13")["by_name"]
    for name in ("dido", "fci"):
        assert summary[name]["value"] is None and summary[name]["range"] is None
        assert summary[name]["reason"] == "no events in this window"


def on_day(day: date, i: int) -> str:
    return datetime(day.year, day.month, day.day, 10, i % 60, tzinfo=ZONE).isoformat()


def test_confidence_turns_at_10_and_30_events(client: CityClient) -> None:
    # Both of testville's sites report every day (100 %); only the events differ:
    # 9 (low), 10 (medium), 29 (medium), 30 (high). Every event takes 1 kg from the city.
    first = date(2026, 3, 2)
    counts = [9, 10, 29, 30]
    batch = []
    for d, n in enumerate(counts):
        day = first + timedelta(days=d)
        for i in range(n):
            source = f"/{CITY}/{SITE if i % 2 else OTHER_SITE}"
            batch.append(event([flow(quantity=1)], source=source, time=on_day(day, i)))
    ingest(client, batch)
    last = str(first + timedelta(days=len(counts) - 1))
    got = points(client, "input_kg,fci", str(first), last)
    assert [p["coverage"]["events"] for p in got["input_kg"]] == counts
    assert [p["confidence"] for p in got["input_kg"]] == ["low", "medium", "medium", "high"]
    # FCI on the day of 30 events still has two terms not recorded (nothing made, nothing
    # thrown away): a range, never `high`.
    assert got["fci"][3]["range"] is not None
    assert [p["confidence"] for p in got["fci"]] == ["low", "medium", "medium", "medium"]


def test_confidence_turns_at_half_and_at_80_percent_of_sites(client: CityClient) -> None:
    # A city of 100 sites. Each day some of them send one event each (always 30 or more):
    # 49 sites (49 %: low), 50 (medium), 79 (medium), 80 (80 %: high).
    city_with_sites(client, "hundred", 100)
    first = date(2026, 3, 2)
    reporting = [49, 50, 79, 80]
    batch = [
        event([flow(quantity=1)], source=f"/hundred/s{i}", time=on_day(first + timedelta(d), i))
        for d, n in enumerate(reporting)
        for i in range(n)
    ]
    ingest(client, batch)
    last = str(first + timedelta(days=len(reporting) - 1))
    got = points(client, "input_kg", str(first), last, city="hundred")["input_kg"]
    assert [p["coverage"]["sites_reporting"] for p in got] == reporting
    assert [p["coverage"]["sites_active"] for p in got] == [100] * 4
    assert [p["confidence"] for p in got] == ["low", "medium", "medium", "high"]


def now_in_city() -> datetime:
    return datetime.now(UTC).astimezone(ZONE)


def test_windows_not_over_yet_are_partial(client: CityClient) -> None:
    # Thirty events from both sites a minute ago: today, this week and this month are not
    # over, so they are partial and `low` whatever stands behind them; yesterday is over.
    now = now_in_city()
    when = (now - timedelta(minutes=1)).isoformat()
    ingest(client, [
        event([flow(quantity=1)], source=f"/{CITY}/{SITE if i % 2 else OTHER_SITE}", time=when)
        for i in range(30)
    ])  # fmt: skip
    today = now.date()
    yesterday = str(today - timedelta(days=1))
    for interval in ("day", "week", "month"):
        got = points(client, "input_kg,fci", str(today), str(today), interval=interval)
        point = got["input_kg"][-1]
        assert point["partial"] is True, interval
        assert point["value"] == 30 and point["confidence"] == "low", interval
        assert got["fci"][-1]["partial"] is True
    days = points(client, "input_kg", yesterday, str(today))["input_kg"]
    assert [p["partial"] for p in days] == [False, True]
    assert figures(client, str(today), str(today))["partial"] is True
    assert figures(client, yesterday, yesterday)["partial"] is False

    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(
                    f"/v1/cities/{CITY}/metrics",
                    params={"names": "input_kg", "from": yesterday, "to": str(today),
                            "format": "csv"},
                ).text
            )
        )
    )  # fmt: skip
    assert [(r["partial"], r["confidence"]) for r in rows] == [("false", ""), ("true", "low")]
    summary_csv = client.get(
        f"/v1/cities/{CITY}/summary", params={"from": str(today), "to": str(today), "format": "csv"}
    ).text
    summary_rows = list(csv.DictReader(io.StringIO(summary_csv)))
    assert summary_rows and all(r["partial"] == "true" for r in summary_rows)
    entities = client.get(
        f"/v1/cities/{CITY}/ngsi-ld",
        params={"names": "input_kg", "from": str(today), "to": str(today), "interval": "month"},
    ).json()
    assert entities[0]["partial"]["value"] is True
    assert entities[0]["confidence"]["value"] == "low"


def test_windows_long_over_are_not_partial(client: CityClient) -> None:
    ingest(client, [event([flow(quantity=2)])])
    for interval in ("hour", "day", "week", "month"):
        got = points(client, "input_kg", DAY, DAY, interval=interval)["input_kg"]
        assert not any(p["partial"] for p in got), interval
    # the year 2026 is over from its last local midnight on
    year = points(client, "input_kg", DAY, DAY, interval="year")["input_kg"]
    assert year[0]["partial"] is (now_in_city().year == 2026)


def test_waste_per_person(client: CityClient) -> None:
    # 3 kg thrown away in the day; 1,500 people: 0.002 kg each.
    ingest(client, [event([flow("discard", "plastic", 2, "kg", fate="landfill"),
                           flow("discard", "wood", 1, "kg", fate="recycle")])])  # fmt: skip
    unknown = points(client, "waste_kg,waste_kg_per_person", DAY, DAY)
    assert unknown["waste_kg"][0]["value"] == 3
    per_person = unknown["waste_kg_per_person"][0]
    assert per_person["value"] is None and "population" in per_person["reason"]
    with transaction(client.factory) as s:
        s.execute(update(models.City).where(models.City.slug == CITY).values(population=1500))
    known = points(client, "waste_kg_per_person", DAY, DAY)["waste_kg_per_person"][0]
    assert known["value"] == pytest.approx(3 / 1500)
    assert known["state"] == "reported" and known["confidence"] == "low"
    summary = figures(client, DAY, DAY)["by_name"]["waste_kg_per_person"]
    assert summary["value"] == pytest.approx(0.002) and summary["unit"] == "kg/person"
    # a day without waste: not recorded, never 0
    quiet = points(client, "waste_kg_per_person", "2026-03-11", "2026-03-11")
    assert quiet["waste_kg_per_person"][0]["value"] is None
