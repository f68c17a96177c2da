"""The planners' read side through the API: metric series (values, grouping, windows,
refusals), summary, compare, flows, CSV, NGSI-LD, ETags and pages."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from sqlalchemy import update

from fabcity.core import models
from fabcity.core.db import transaction
from fabcity.read.metrics import METRICS
from tests.services.http.support import (
    BATCH,
    HUB,
    LAB,
    METRICS_URL,
    PRINTER,
    MakeClient,
    Sessions,
    assert_problem,
    metrics,
    post,
    series,
)
from tests.support.api import CityClient, city_client, ingest
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow
from workers.jobs import recompute_dirty_windows

ROOT = Path(__file__).resolve().parents[3]
DAY, NEXT = "2026-03-10", "2026-03-11"
PERIOD = {"from": DAY, "to": NEXT}


@pytest.fixture
def client(sqlite_url: str) -> Iterator[CityClient]:
    with city_client(sqlite_url) as test_client:
        with transaction(test_client.factory) as s:
            s.execute(update(models.City).values(population=1000))
        yield test_client


def seed(client: CityClient) -> None:
    """Two days at the lab: 13 kg in (9 local), things made, repaired, thrown away, recovered."""
    ingest(client, [
        event([flow(quantity=6, ring="city"), flow(quantity=2, ring="region"),
               flow(quantity=2, ring="beyond", recycled=True),
               flow("produce", "part", 4, "count"), flow("modify", "furniture", 1, "count"),
               flow("discard", "plastic", 1, "kg", fate="recycle"),
               flow("discard", "plastic", 1, "kg", fate="landfill"),
               flow("recover", "recycled_plastic", 0.5, "kg")]),
        event([flow(quantity=3, ring="city", recycled=True),
               flow("produce", "plastic", 1.5, "kg", ring="beyond")],
              time=f"{NEXT}T12:00:00+01:00"),
    ])  # fmt: skip


def figures(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in body["figures"]}


def test_summary_is_computed_over_the_whole_period(client: CityClient) -> None:
    seed(client)
    response = client.get(f"/v1/cities/{CITY}/summary", params=PERIOD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"], body["population"]) == (DAY, NEXT, 1000)
    got = figures(body)
    assert got["input_kg"]["value"] == 13
    assert got["local_input_share"]["value"] == pytest.approx(9 / 13)
    assert got["local_input_share"]["state"] == "reported"
    assert got["produced_count"]["value"] == 4 and got["repaired_count"]["value"] == 1
    assert got["diversion_rate"]["value"] == 0.5
    # DE 6 (local, not recycled) + IMP 4 − EXP 1.5 (made and sent beyond) per 1000 people
    assert got["dmc_per_person"]["value"] == pytest.approx(8.5 / 1000)
    assert got["cmu"]["value"] == pytest.approx(0.5 / 9)
    headline = [f["name"] for f in body["figures"] if f["headline"]]
    assert headline == ["fci", "local_input_share", "cmu", "dmc_per_person", "produced_count",
                        "repaired_count", "diversion_rate"]  # fmt: skip
    assert body["coverage"] == {"events": 2, "sites_reporting": 1, "sites_active": 2}
    accounts = {a["category"]: a for a in body["accounts"]}
    assert accounts["MF4"]["imp"]["value"] == 4 and accounts["MF4"]["de"]["value"] == 6
    assert accounts["total"]["dmc"]["value"] == 8.5


def test_a_day_summary_equals_that_day_in_the_series(client: CityClient) -> None:
    seed(client)
    summary = figures(client.get(f"/v1/cities/{CITY}/summary", params={"from": DAY, "to": DAY})
                      .json())  # fmt: skip
    names = ",".join(summary)
    series = client.get(
        f"/v1/cities/{CITY}/metrics", params={"names": names, "from": DAY, "to": DAY}
    ).json()["series"]
    for s in series:
        point = s["points"][0]
        got = summary[s["name"]]
        assert (got["value"], got["state"], got["range"]) == (
            point["value"],
            point["state"],
            point["range"],
        ), s["name"]


MARCH = {"from": "2026-03-01", "to": "2026-03-31"}
SAID = ("value", "state", "reason", "terms", "range", "confidence")


@pytest.mark.parametrize("group_by", [None, "site", "device", "resource", "ring", "mfa_category"])
def test_a_month_broken_down_is_that_month_of_the_series_part_by_part(
    client: CityClient, group_by: str | None
) -> None:
    seed(client)
    ingest(client, [
        event([flow(quantity=4, ring="region"), flow("discard", "plastic", 2, "kg",
                                                     fate="landfill")],
              source=f"/{CITY}/{OTHER_SITE}", time="2026-03-20T09:00:00+01:00"),
        event([flow(quantity=0.5)], source=f"/{CITY}/{SITE}/{DEVICE}",
              time="2026-03-21T09:00:00+01:00"),
    ])  # fmt: skip
    names = ",".join(METRICS)
    grouping = {"group_by": group_by} if group_by else {}
    response = client.get(
        f"/v1/cities/{CITY}/breakdown", params={"names": names, **MARCH, **grouping}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    month = client.get(
        METRICS_URL, params={"names": names, "interval": "month", **MARCH, **grouping}
    ).json()
    points = {(s["name"], s["key"]): s["points"] for s in month["series"]}
    got = {(p["name"], p["key"]): p for p in body["parts"]}
    assert list(got) == list(points)  # the same parts, in the same order
    assert len({key for _, key in got}) == (1 if group_by is None else len(got) // len(METRICS))
    for part, (point,) in zip(got.values(), points.values(), strict=True):
        assert {k: part[k] for k in SAID} == {k: point[k] for k in SAID}, part
        assert (body["coverage"], body["partial"]) == (point["coverage"], point["partial"])


def test_a_period_broken_down_by_site_is_each_sites_own(client: CityClient) -> None:
    seed(client)  # the lab: 13 kg in (9 of them local), 1 kg thrown away of 2 diverted
    ingest(client, [event([flow(quantity=4, ring="region")], source=f"/{CITY}/{OTHER_SITE}",
                          time="2026-03-11T09:00:00+01:00")])  # fmt: skip
    response = client.get(
        f"/v1/cities/{CITY}/breakdown",
        params={"names": "input_kg,local_input_share,diversion_rate", "group_by": "site", **PERIOD},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"], body["group_by"]) == (DAY, NEXT, "site")
    schema = orjson.loads((ROOT / "schemas" / "json" / "breakdown.schema.json").read_bytes())
    Draft202012Validator(schema).validate(body)  # the published schema says what is sent
    got = {(p["name"], p["key"]): p for p in body["parts"]}
    assert list(got) == [
        ("input_kg", OTHER_SITE), ("input_kg", SITE),
        ("local_input_share", OTHER_SITE), ("local_input_share", SITE),
        ("diversion_rate", OTHER_SITE), ("diversion_rate", SITE),
    ]  # fmt: skip
    assert got["input_kg", SITE]["value"] == 13 and got["input_kg", OTHER_SITE]["value"] == 4
    assert got["local_input_share", SITE]["value"] == pytest.approx(9 / 13)
    # The region is beyond the city: none of the hub's 4 kg is local (METRICS.md).
    assert got["local_input_share", OTHER_SITE]["value"] == 0
    assert got["diversion_rate", SITE]["value"] == 0.5
    hub = got["diversion_rate", OTHER_SITE]
    assert hub["value"] is None and hub["reason"] == "no waste recorded"
    # Two events at the lab and one at the hub, both sites reporting.
    assert body["coverage"] == {"events": 3, "sites_reporting": 2, "sites_active": 2}
    # Summed over the parts: the city's own figure.
    city = figures(client.get(f"/v1/cities/{CITY}/summary", params=PERIOD).json())
    assert city["input_kg"]["value"] == 17


def test_a_breakdown_answers_csv_and_refuses_what_it_cannot_answer(client: CityClient) -> None:
    seed(client)
    url = f"/v1/cities/{CITY}/breakdown"
    rows = read_csv(client.get(url, params={"names": "input_kg", "group_by": "ring",
                                            "format": "csv", **PERIOD}).text)  # fmt: skip
    assert {r["key"]: float(r["value"]) for r in rows} == {"beyond": 2, "city": 9, "region": 2}
    assert {(r["group_by"], r["from"], r["to"], r["events"]) for r in rows} == {
        ("ring", DAY, NEXT, "2")
    }
    assert_problem(client.get(url, params={"group_by": "city"}), 422)
    assert_problem(client.get(url, params={"names": "input_kg,nonsense"}), 422)
    assert_problem(client.get(url, params={"from": NEXT, "to": DAY}), 422)
    assert_problem(client.get(url, params={"from": "0001-01-01", "to": "9999-12-31"}), 422)
    assert_problem(client.get("/v1/cities/elsewhere/breakdown"), 404)
    # Nothing in the period: no part to list, and the coverage says why.
    empty = client.get(url, params={"group_by": "site", "from": "2026-01-01", "to": "2026-01-31"})
    assert empty.json()["parts"] == [] and empty.json()["coverage"]["events"] == 0


def test_a_metric_asked_a_thousand_times_is_answered_once(client: CityClient) -> None:
    """One URL of a few kilobytes must not ask for a thousand copies of a long series."""
    seed(client)
    names = ",".join(["input_kg", "waste_kg"] * 1000)
    asked = {"names": names, **PERIOD}
    got = client.get(METRICS_URL, params={**asked, "group_by": "site"}).json()["series"]
    assert [s["name"] for s in got] == ["input_kg", "waste_kg"]
    parts = client.get(f"/v1/cities/{CITY}/breakdown", params=asked).json()["parts"]
    assert [p["name"] for p in parts] == ["input_kg", "waste_kg"]
    compared = client.get("/v1/compare", params={"cities": CITY, **asked}).json()
    assert compared["names"] == ["input_kg", "waste_kg"]


def test_what_was_not_recorded_is_null_with_a_reason(client: CityClient) -> None:
    ingest(client, [event([flow("produce", "part", 2, "count")])])
    got = figures(client.get(f"/v1/cities/{CITY}/summary", params=PERIOD).json())
    for name in ("local_input_share", "diversion_rate", "cmu", "dmc_per_person"):
        assert got[name]["value"] is None and got[name]["reason"], name
        assert got[name]["state"] is None
    # FCI without PITO is a range, not a number
    assert got["fci"]["value"] is None and got["fci"]["range"][0] == 0
    january = {"from": "2025-01-01", "to": "2025-01-31"}
    empty = figures(client.get(f"/v1/cities/{CITY}/summary", params=january).json())
    assert empty["produced_count"]["value"] is None
    assert empty["produced_count"]["reason"] == "no events in this window"


def test_flows_balance_at_every_node_and_close_the_loop(client: CityClient) -> None:
    seed(client)
    body = client.get(f"/v1/cities/{CITY}/flows", params=PERIOD).json()
    kinds = {n["id"]: n["kind"] for n in body["nodes"]}
    inflow: dict[str, float] = defaultdict(float)
    outflow: dict[str, float] = defaultdict(float)
    links = {(link["source"], link["target"]): link for link in body["links"]}
    for link in body["links"]:
        assert link["value"] > 0
        outflow[link["source"]] += link["value"]
        inflow[link["target"]] += link["value"]
    for node, kind in kinds.items():
        if kind in ("category", "city", "recovered"):
            assert inflow[node] == pytest.approx(outflow[node]), node
    assert links["origin:city", "mfa:MF4"]["value"] == 6
    assert links["origin:beyond", "mfa:MF4"]["value"] == 2  # recycled, but imported
    # 0.5 kg recovered in the city, 3 kg of recycled local input: 2.5 drawn from stock
    assert links["city", "recovered"]["value"] == 0.5
    assert links["recovered", "mfa:MF4"]["value"] == 3
    assert links["stock:drawn", "recovered"] == {"source": "stock:drawn", "target": "recovered",
                                                 "value": 2.5, "state": "modelled"}  # fmt: skip
    # into the city 13 kg; out 1.5 exported + 2 waste + 0.5 recovered: 9 kg stay
    assert links["city", "stock:added"]["value"] == 9
    assert links["city", "product:exported"]["value"] == 1.5
    assert body["unweighed_count"] == 5  # 4 parts and 1 repair of unknown mass


def test_compare_lists_each_city_in_its_own_windows(client: CityClient) -> None:
    seed(client)
    other = {"slug": "lagos", "name": "Lagos", "country": "NG", "timezone": "Africa/Lagos"}
    assert client.post("/v1/cities", json=other).status_code == 201
    response = client.get(
        "/v1/compare",
        params={"cities": f"{CITY},lagos", "names": "input_kg", "interval": "month", **PERIOD},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["city"] for c in body["cities"]] == [CITY, "lagos"]
    assert body["cities"][0]["series"][0]["points"][0]["value"] == 13
    assert body["cities"][1]["series"][0]["points"][0]["value"] is None
    missing = client.get("/v1/compare", params={"cities": f"{CITY},atlantis"})
    assert missing.status_code == 404 and "atlantis" in missing.json()["detail"]


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_metrics_answer_csv_by_accept_or_format(client: CityClient) -> None:
    seed(client)
    params = {"names": "input_kg,local_input_share", **PERIOD}
    by_accept = client.get(f"/v1/cities/{CITY}/metrics", params=params,
                           headers={"accept": "text/csv"})  # fmt: skip
    by_format = client.get(f"/v1/cities/{CITY}/metrics", params={**params, "format": "csv"})
    assert by_accept.headers["content-type"].startswith("text/csv")
    assert by_accept.text == by_format.text
    rows = read_csv(by_accept.text)
    assert [(r["name"], r["start"], r["value"]) for r in rows] == [
        ("input_kg", DAY, "10.0"), ("input_kg", NEXT, "3.0"),
        ("local_input_share", DAY, "0.6"), ("local_input_share", NEXT, "1.0"),
    ]  # fmt: skip
    assert rows[0]["state"] == "reported" and rows[0]["events"] == "1"
    browser = client.get(f"/v1/cities/{CITY}/metrics", params=params,
                         headers={"accept": "text/html,*/*;q=0.8"})  # fmt: skip
    assert browser.headers["content-type"] == "application/json"


def test_a_long_csv_export_goes_past_the_json_window_cap(client: CityClient) -> None:
    # 200 days of hours is 4,801 windows (2025-10-26 has 25 hours in Madrid): JSON refuses,
    # CSV streams them span by span.
    params = {"names": "input_kg", "from": "2025-06-01", "to": "2025-12-17", "interval": "hour"}
    assert client.get(f"/v1/cities/{CITY}/metrics", params=params).status_code == 422
    export = client.get(f"/v1/cities/{CITY}/metrics", params={**params, "format": "csv"})
    rows = read_csv(export.text)
    assert len({r["start"] for r in rows}) == len(rows) == 200 * 24 + 1
    assert rows[0]["start"] == "2025-06-01T00:00:00+02:00"
    assert rows[-1]["start"] == "2025-12-17T23:00:00+01:00"
    assert all(r["value"] == "" and r["reason"] for r in rows)  # not recorded: empty, never 0


def test_summary_and_flows_answer_csv(client: CityClient) -> None:
    seed(client)
    summary = read_csv(client.get(f"/v1/cities/{CITY}/summary",
                                  params={**PERIOD, "format": "csv"}).text)  # fmt: skip
    made = next(r for r in summary if r["name"] == "produced_count")
    assert (made["section"], made["value"], made["state"]) == ("headline", "4.0", "reported")
    assert any(r["section"] == "account" and r["category"] == "MF4" for r in summary)
    flows = read_csv(client.get(f"/v1/cities/{CITY}/flows", params={**PERIOD, "format": "csv"},
                                ).text)  # fmt: skip
    assert {(r["source"], r["target"], r["value_kg"]) for r in flows} >= {
        ("city", "stock:added", "9.0")
    }


def test_ngsi_ld_key_performance_indicators(client: CityClient) -> None:
    seed(client)
    response = client.get(
        f"/v1/cities/{CITY}/ngsi-ld",
        params={"names": "local_input_share,cmu", "interval": "day", **PERIOD},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/ld+json"
    entities = {e["id"]: e for e in response.json()}
    share = entities[f"urn:ngsi-ld:KeyPerformanceIndicator:{CITY}:local_input_share:{DAY}"]
    assert share["type"] == "KeyPerformanceIndicator"
    assert share["kpiValue"] == {
        "type": "Property", "value": 0.6, "unitCode": "C62", "observedAt": "2026-03-09T23:00:00Z"
    }  # fmt: skip
    assert share["calculationPeriod"]["value"] == {"from": DAY, "to": DAY}
    assert share["calculationFrequency"]["value"] == "daily"
    assert share["organization"]["value"] == "Testville"
    assert share["category"]["value"] == ["quantitative"]
    assert share["description"]["value"]
    assert any("ngsi-ld-core-context" in c for c in share["@context"])
    # CMU on the 11th has no DMC + U to divide by: no entity rather than a false 0
    assert f"urn:ngsi-ld:KeyPerformanceIndicator:{CITY}:cmu:{NEXT}" not in entities
    params = {"names": "input_kg", "interval": "month", "options": "keyValues", **PERIOD}
    monthly = client.get(f"/v1/cities/{CITY}/ngsi-ld", params=params).json()
    assert monthly[0]["id"].endswith(":input_kg:2026-03")
    assert monthly[0]["kpiValue"] == 13
    assert monthly[0]["calculationPeriod"] == {"from": "2026-03-01", "to": "2026-03-31"}


@pytest.mark.parametrize("path", ["metrics", "summary", "flows", "ngsi-ld"])
def test_metric_responses_carry_an_etag_and_honour_if_none_match(
    client: CityClient, path: str
) -> None:
    seed(client)
    url = f"/v1/cities/{CITY}/{path}"
    first = client.get(url, params=PERIOD)
    etag = first.headers["etag"]
    assert etag.startswith('W/"') and "max-age" in first.headers["cache-control"]
    again = client.get(url, params=PERIOD, headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    ingest(client, [event(flow(quantity=1), time=f"{DAY}T18:00:00+01:00")])
    changed = client.get(url, params=PERIOD, headers={"if-none-match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_lists_are_paged_with_a_cursor(client: CityClient) -> None:
    for i in range(5):
        body = {"slug": f"lab-{i}", "name": f"Lab {i}"}
        assert client.post(f"/v1/cities/{CITY}/sites", json=body).status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/cities/{CITY}/sites", params=params).json()
        seen += [s["slug"] for s in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(["hub", "lab", *(f"lab-{i}" for i in range(5))])
    assert pages == 3
    bad = client.get(f"/v1/cities/{CITY}/sites", params={"cursor": "not-ours"})
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
    assert client.get("/v1/cities", params={"limit": 0}).status_code == 422
    resources = client.get("/v1/resources", params={"limit": 5}).json()
    assert len(resources["items"]) == 5 and resources["next_cursor"]


def test_city_devices_with_their_online_status(client: CityClient) -> None:
    other = {"slug": "laser", "name": "Laser", "kind": "laser"}
    assert client.post(f"/v1/cities/{CITY}/sites/hub/devices", json=other).status_code == 201
    seen = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    with transaction(client.factory) as s:
        # what the adapters write when a device's birth or status message arrives
        s.execute(
            update(models.Device)
            .where(models.Device.slug == DEVICE)
            .values(online=True, last_seen=seen)
        )
    first = client.get(f"/v1/cities/{CITY}/devices", params={"limit": 1}).json()
    assert [(d["site"], d["slug"]) for d in first["items"]] == [("hub", "laser")]
    assert first["items"][0]["online"] is None  # never heard from: unknown, not offline
    rest = client.get(f"/v1/cities/{CITY}/devices", params={"cursor": first["next_cursor"]}).json()
    assert [(d["site"], d["slug"]) for d in rest["items"]] == [(SITE, DEVICE)]
    assert rest["items"][0]["online"] is True
    assert datetime.fromisoformat(rest["items"][0]["last_seen"]).astimezone(UTC) == seen
    assert rest["next_cursor"] is None


def test_a_period_of_whole_months_reads_month_rollups_that_follow_late_events(
    client: CityClient,
) -> None:
    times = ["2026-02-20T10:00:00+01:00", "2026-03-05T10:00:00+01:00",
             "2026-03-31T23:30:00+02:00", "2026-04-02T10:00:00+02:00"]  # fmt: skip
    ingest(client, [event(flow(quantity=i + 1), time=t) for i, t in enumerate(times)])
    period = {"from": "2026-02-15", "to": "2026-04-10"}

    def inputs() -> tuple[float, float]:
        summary = figures(client.get(f"/v1/cities/{CITY}/summary", params=period).json())
        series = client.get(
            f"/v1/cities/{CITY}/metrics", params={"names": "input_kg", **period}
        ).json()["series"][0]["points"]
        return summary["input_kg"]["value"], sum(p["value"] or 0 for p in series)

    assert inputs() == (10, 10)
    # a late report into March: its month is summed again
    ingest(client, [event(flow(quantity=5), time="2026-03-15T10:00:00+01:00")])
    assert inputs() == (15, 15)
    march = client.get(
        f"/v1/cities/{CITY}/metrics",
        params={"names": "input_kg", "from": "2026-03-01", "to": "2026-03-31", "interval": "month"},
    ).json()["series"][0]["points"]
    assert [p["value"] for p in march] == [10]


def test_the_dashboard_is_served_with_plotly_from_the_package(client: CityClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/dashboard/app.js" in page.text and "/dashboard/plotly.min.js" in page.text
    plotly = client.get("/dashboard/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert "max-age" in plotly.headers["cache-control"]
    assert client.get("/dashboard/app.js").headers["content-type"].startswith("text/javascript")
    missing = client.get("/dashboard/secrets.txt")
    assert missing.status_code == 404 and missing.json()["type"].endswith("not-found")


# Metric series, grouping, windows and refusals, read from flows ingested over HTTP ----------


@pytest.fixture
def api(make_client: MakeClient) -> TestClient:
    """A client of the app on the test city (this module's `client` is a seeded city's)."""
    return make_client()


def _ingest_march_tenth(api: TestClient) -> None:
    """On 2026-03-10 (Madrid): 2 kg filament from the city and 1000 g from beyond at the lab,
    5 kWh of electricity, 4 parts made, 0.5 kg of plastic discarded; a device reports 0.5 kg
    from the site at 00:15 local time (23:15 UTC the day before)."""
    batch = [
        event(
            [
                flow("consume", "filament", 2, "kg", "city"),
                flow("consume", "filament", 1000, "g", "beyond"),
                flow("consume", "electricity", 5, "kWh", "city"),
                flow("produce", "part", 4, "count", "site"),
                flow("discard", "plastic", 0.5, "kg", "city", fate="recycle"),
            ],
            time="2026-03-10T10:00:00+01:00",
        ),
        event(
            flow("consume", "filament", 0.5, "kg", "site"),
            source=PRINTER,
            time="2026-03-09T23:15:00+00:00",
        ),
    ]
    response = post(api, batch, BATCH)
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}


class TestMetricValues:
    """Metrics read from the rollups of ingested flows, and null with a reason without them."""

    def test_metrics_are_computed_from_the_ingested_flows(
        self, api: TestClient, sessions: Sessions
    ) -> None:
        _ingest_march_tenth(api)
        # Two events at different hours of the same local day: two hourly windows.
        assert recompute_dirty_windows(sessions, 100) == 2

        body = metrics(api, "2026-03-10", "2026-03-10")

        assert body["city"] == CITY
        assert body["interval"] == "day"
        assert body["timezone"] == "Europe/Madrid"
        assert body["group_by"] is None
        units = {s["name"]: s["unit"] for s in body["series"]}
        assert units == {
            "input_kg": "kg",
            "local_input_share": "ratio",
            "produced_count": "count",
            "waste_kg": "kg",
        }
        [inputs] = series(body, "input_kg")
        [share] = series(body, "local_input_share")
        [made] = series(body, "produced_count")
        [waste] = series(body, "waste_kg")
        # 2 kg (city) + 1 kg (1000 g, beyond) + 0.5 kg (site); electricity is not material.
        assert inputs["value"] == pytest.approx(3.5)
        # (2 + 0.5) local of 3.5.
        assert share["value"] == pytest.approx(2.5 / 3.5, abs=1e-9)
        assert made["value"] == 4.0
        assert waste["value"] == 0.5
        # The lab's own report is `reported`, the printer's `measured`: the weakest wins.
        assert inputs["state"] == "reported"
        assert made["state"] == "reported"
        assert inputs["reason"] is None
        assert inputs["coverage"] == {"events": 2, "sites_reporting": 1, "sites_active": 2}

    def test_two_kilograms_from_the_city_and_one_from_beyond(
        self, api: TestClient, sessions: Sessions
    ) -> None:
        data = [
            flow("consume", "filament", 2, "kg", "city"),
            flow("consume", "filament", 1, "kg", "beyond"),
        ]
        assert post(api, event(data, source=PRINTER)).status_code == 202
        recompute_dirty_windows(sessions, 100)

        body = metrics(api, "2026-03-10", "2026-03-10", "input_kg,local_input_share")

        [inputs] = series(body, "input_kg")
        [share] = series(body, "local_input_share")
        assert inputs["value"] == 3.0
        assert share["value"] == pytest.approx(2 / 3, abs=1e-9)
        assert share["state"] == "measured"

    def test_a_day_without_events_is_null_with_a_reason_never_zero(
        self, api: TestClient, sessions: Sessions
    ) -> None:
        _ingest_march_tenth(api)
        recompute_dirty_windows(sessions, 100)

        body = metrics(api, "2026-03-09", "2026-03-11")

        for s in body["series"]:
            points = s["points"]
            assert [p["start"] for p in points] == ["2026-03-09", "2026-03-10", "2026-03-11"]
            for empty in (points[0], points[2]):
                assert empty["value"] is None, s["name"]
                assert empty["state"] is None
                assert empty["reason"]
                assert empty["coverage"]["events"] == 0
            assert points[1]["value"] is not None

    def test_a_day_with_events_but_no_inputs_says_so(
        self, api: TestClient, sessions: Sessions
    ) -> None:
        assert post(api, event(flow("produce", "part", 1, "count", "site"))).status_code == 202
        recompute_dirty_windows(sessions, 100)

        body = metrics(api, "2026-03-10", "2026-03-10", "input_kg,local_input_share")

        for name in ("input_kg", "local_input_share"):
            [point] = series(body, name)
            assert point["value"] is None
            assert point["reason"] == "no inputs recorded"
            assert point["coverage"]["events"] == 1

    def test_metrics_before_the_recompute_are_not_made_up(self, api: TestClient) -> None:
        # The query reads rollups only; until the worker runs, there is nothing to report.
        _ingest_march_tenth(api)
        [point] = series(metrics(api, "2026-03-10", "2026-03-10"), "input_kg")
        assert point["value"] is None
        assert point["reason"]


class TestMetricGrouping:
    """`group_by`: one series per key."""

    def test_group_by_ring_gives_one_series_per_ring(
        self, api: TestClient, sessions: Sessions
    ) -> None:
        _ingest_march_tenth(api)
        recompute_dirty_windows(sessions, 100)

        body = metrics(api, "2026-03-10", "2026-03-10", "input_kg", group_by="ring")

        assert body["group_by"] == "ring"
        # Every ring that has a flow that day: beyond (filament), city (filament, electricity,
        # plastic), site (parts, filament).
        assert [s["key"] for s in body["series"]] == ["beyond", "city", "site"]
        values = {s["key"]: s["points"][0]["value"] for s in body["series"]}
        assert values == {"beyond": 1.0, "city": 2.0, "site": 0.5}
        states = {s["key"]: s["points"][0]["state"] for s in body["series"]}
        assert states == {"beyond": "reported", "city": "reported", "site": "measured"}

    def test_group_by_site(self, api: TestClient, sessions: Sessions) -> None:
        post(api, event(flow(quantity=1), source=LAB))
        post(api, event(flow(quantity=2), source=HUB))
        recompute_dirty_windows(sessions, 100)

        body = metrics(api, "2026-03-10", "2026-03-10", "input_kg", group_by="site")

        values = {s["key"]: s["points"][0]["value"] for s in body["series"]}
        assert values == {OTHER_SITE: 2.0, SITE: 1.0}


class TestMetricWindows:
    """Windows longer than a day: sums of days, ratios of sums."""

    def test_a_month_sums_its_days_and_takes_the_ratio_of_sums(
        self, api: TestClient, sessions: Sessions
    ) -> None:
        # Day 1: 1 kg local of 1 (100 %); day 2: 1 kg local of 4 (25 %). The month: 2 of 5.
        batch = [
            event(flow(quantity=1, ring="city"), time="2026-03-02T12:00:00+01:00"),
            event(flow(quantity=1, ring="city"), time="2026-03-20T12:00:00+01:00"),
            event(flow(quantity=3, ring="beyond"), time="2026-03-20T12:00:00+01:00"),
        ]
        assert post(api, batch, BATCH).json()["accepted"] == 3
        assert recompute_dirty_windows(sessions, 100) == 2

        body = metrics(
            api, "2026-03-01", "2026-04-30", "input_kg,local_input_share", interval="month"
        )

        inputs = series(body, "input_kg")
        share = series(body, "local_input_share")
        assert [p["start"] for p in inputs] == ["2026-03-01", "2026-04-01"]
        assert inputs[0]["value"] == 5.0
        assert share[0]["value"] == pytest.approx(0.4)
        assert inputs[0]["coverage"]["events"] == 3
        assert inputs[1]["value"] is None and share[1]["value"] is None

    def test_a_window_is_the_same_whatever_day_of_it_the_range_starts_on(
        self, api: TestClient, sessions: Sessions
    ) -> None:
        # 2 kg on 2 March and 3 kg on 20 March: March holds 5 kg. A point is labelled with the
        # first day of its window, so a range from 15 March must either report all of March under
        # `start: 2026-03-01`, or label the clipped window by the day it really starts on. A
        # March value of 3 kg labelled 2026-03-01 contradicts the full-range answer.
        batch = [
            event(flow(quantity=2), time="2026-03-02T12:00:00+01:00"),
            event(flow(quantity=3), time="2026-03-20T12:00:00+01:00"),
        ]
        assert post(api, batch, BATCH).json()["accepted"] == 2
        recompute_dirty_windows(sessions, 100)

        whole = series(
            metrics(api, "2026-03-01", "2026-03-31", "input_kg", interval="month"), "input_kg"
        )
        assert [(p["start"], p["value"]) for p in whole] == [("2026-03-01", 5.0)]

        [clipped] = series(
            metrics(api, "2026-03-15", "2026-03-31", "input_kg", interval="month"), "input_kg"
        )
        assert (clipped["start"], clipped["value"]) in {("2026-03-01", 5.0), ("2026-03-15", 3.0)}


class TestMetricQueryRefusals:
    """A metrics query the API cannot answer: a problem, never a guess."""

    def test_an_unknown_metric_name_is_a_422_problem(self, api: TestClient) -> None:
        response = api.get(METRICS_URL, params={"names": "input_kg,happiness"})
        body = assert_problem(response, 422)
        assert "happiness" in body["detail"]
        assert "input_kg" in body["detail"]  # the known names are listed

    def test_from_after_to_is_a_422_problem(self, api: TestClient) -> None:
        response = api.get(METRICS_URL, params={"from": "2026-03-11", "to": "2026-03-10"})
        body = assert_problem(response, 422)
        assert "2026-03-11" in body["detail"] and "2026-03-10" in body["detail"]

    @pytest.mark.parametrize(
        "params",
        [{"interval": "minute"}, {"group_by": "colour"}, {"from": "10/03/2026"}],
    )
    def test_bad_query_parameters_are_422_problems(
        self, api: TestClient, params: dict[str, str]
    ) -> None:
        assert_problem(api.get(METRICS_URL, params=params), 422)

    def test_too_many_windows_are_refused(self, api: TestClient) -> None:
        response = api.get(METRICS_URL, params={"from": "2020-01-01", "to": "2026-01-01"})
        body = assert_problem(response, 422)
        assert "interval" in body["detail"]

    def test_metrics_of_an_unknown_city_is_a_404_problem(self, api: TestClient) -> None:
        assert_problem(api.get("/v1/cities/atlantis/metrics"), 404)
