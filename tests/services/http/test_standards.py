"""The open-standards endpoints over HTTP, `fabcity import` as a real process, and the NGSI-LD
export checked against the Smart Data Models' own JSON Schema."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.core.models import Event, RollupChange
from services.http.app import create_app
from tests.conftest import settings_for
from tests.fixtures import NGSI_LD, OKH, OKW
from tests.support.api import CityClient, city_client, ingest
from tests.support.city import CITY, event, flow, register
from tests.support.procs import FABCITY
from workers import jobs
from workers.dispatch import NoDispatch

YAML = {"content-type": "application/yaml"}
TOML = {"content-type": "application/toml"}


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    engine = make_engine(sqlite_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)
    app = create_app(settings_for(sqlite_url), "both", factory=factory, dispatcher=NoDispatch())
    with TestClient(app) as c:
        yield c
    engine.dispose()


def test_okw_import_then_list_facilities(client: TestClient) -> None:
    r = client.post(f"/v1/cities/{CITY}/okw", content=(OKW / "labs.yml").read_bytes(), headers=YAML)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["id"] for i in body["imported"]] == ["fab-lab-centre", "makers-garage"]
    assert [x["index"] for x in body["rejected"]] == [2, 3, 4]

    facilities = client.get(f"/v1/cities/{CITY}/facilities").json()
    centre = next(f for f in facilities if f["slug"] == "fab-lab-centre")
    assert centre["verified_by"] == "Ada Verifier"
    assert centre["equipment"][0]["model"] == "Original Prusa i3 MK3S+"
    # The imported labs are sites like any other.
    sites = {s["slug"] for s in client.get(f"/v1/cities/{CITY}/sites").json()["items"]}
    assert {"fab-lab-centre", "makers-garage"} <= sites


def test_okw_problems_are_4xx_with_every_reason(client: TestClient) -> None:
    r = client.post(f"/v1/cities/{CITY}/okw", content=b"- {}\n- name: '!!'\n", headers=YAML)
    assert r.status_code == 422
    assert [x["index"] for x in r.json()["rejected"]] == [0, 1]
    r = client.post(
        f"/v1/cities/{CITY}/okw", content=b"{", headers={"content-type": "application/json"}
    )
    assert (r.status_code, r.json()["title"]) == (422, "Invalid input")
    r = client.post(f"/v1/cities/{CITY}/okw", content=b"x", headers={"content-type": "text/csv"})
    assert r.status_code == 415
    r = client.post("/v1/cities/nowhere/okw", content=b"name: A\n", headers=YAML)
    assert r.status_code == 404


def test_design_import_update_list_and_get(client: TestClient) -> None:
    url = "https://designs.example.org/okh/stool.toml"
    text = (OKH / "stool.toml").read_bytes()
    r = client.post("/v1/designs", params={"url": url}, content=text, headers=TOML)
    assert r.status_code == 201, r.text
    design = r.json()
    assert (design["url"], design["mass_kg"], design["is_open"]) == (url, 3.2, True)
    again = client.post("/v1/designs", params={"url": url}, content=text, headers=TOML)
    assert (again.status_code, again.json()["id"]) == (200, design["id"])

    lamp = client.post(
        "/v1/designs",
        params={"url": "https://designs.example.org/okh/desk-lamp.yml"},
        content=(OKH / "desk-lamp.yml").read_bytes(),
        headers=YAML,
    )
    assert lamp.status_code == 201
    assert [d["title"] for d in client.get("/v1/designs").json()] == [
        "Desk lamp",
        "Three-leg stool",
    ]
    assert [d["title"] for d in client.get("/v1/designs?open=true").json()] == ["Three-leg stool"]
    assert client.get(f"/v1/designs/{design['id']}").json()["parts"][0] == {
        "name": "Seat",
        "mass_kg": 1.7,
    }
    assert client.get("/v1/designs/999").status_code == 404
    no_url = client.post("/v1/designs", content=text, headers=TOML)
    assert no_url.status_code == 422
    assert "manifest-url" in no_url.json()["detail"]


def test_subscriptions_crud(client: TestClient) -> None:
    r = client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/hook", "city": CITY, "types": ["fabcity.flow"]},
    )
    assert r.status_code == 201, r.text
    sub = r.json()
    assert (sub["mode"], sub["city"], sub["types"], sub["failures"]) == (
        "structured",
        CITY,
        ["fabcity.flow"],
        0,
    )
    assert [s["id"] for s in client.get("/v1/subscriptions").json()] == [sub["id"]]
    assert client.get(f"/v1/subscriptions/{sub['id']}/deliveries").json() == []
    bad = client.post("/v1/subscriptions", json={"url": "ftp://x", "types": ["fabcity.nope"]})
    assert bad.status_code == 422
    assert "fabcity.nope" in bad.json()["detail"]
    assert (
        client.post("/v1/subscriptions", json={"url": "http://x", "city": "nowhere"}).status_code
        == 404
    )
    assert client.delete(f"/v1/subscriptions/{sub['id']}").status_code == 204
    assert client.get(f"/v1/subscriptions/{sub['id']}").status_code == 404


def test_cli_imports_a_directory_with_a_progress_bar(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    register(make_sessionmaker(engine))
    engine.dispose()
    env = {**os.environ, "FABCITY_DATABASE_URL": sqlite_url, "COLUMNS": "120"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FABCITY, "import", *args], env=env, capture_output=True, text=True, timeout=60
        )

    okw = run("okw", str(OKW), "--city", CITY)
    # Refused records make the exit status 1, after the good ones were imported.
    assert okw.returncode == 1, okw.stderr
    assert "OKW records" in okw.stdout
    # 19 of the Alliance's records, three of them one site each with another.
    assert "20 sites created, 4 updated, 3 refused" in okw.stdout
    assert "labs.yml#2: Lost Lab" in okw.stderr

    okh = run("okh", str(OKH), "--url-prefix", "https://designs.example.org/okh")
    assert okh.returncode == 1
    # The 9 made-up manifests (5 good, 4 bad) and the 21 of corpus/ (20 read, 1 empty).
    assert "25 designs created, 0 updated, 5 refused" in okh.stdout
    assert "no-title.yml: `title` is missing" in okh.stderr

    one = run("okh", str(OKH / "stool.toml"), "--url", "https://designs.example.org/okh/stool.toml")
    assert one.returncode == 0, one.stderr
    assert "0 designs created, 1 updated, 0 refused" in one.stdout
    assert run("okw", str(OKW), "--city", "nowhere").returncode == 2


# NGSI-LD against the Smart Data Models schema ------------------------------------------------

KPI_SCHEMA = orjson.loads((NGSI_LD / "KeyPerformanceIndicator.schema.json").read_bytes())
COMMON = orjson.loads((NGSI_LD / "common-schema.json").read_bytes())
# The schema's remote $refs, answered from the stored copy: the check never reaches a network.
KPI_REFS: Registry[Any] = Registry().with_resource(
    COMMON["$id"], DRAFT202012.create_resource(COMMON)
)
LAB_AT, HUB_AT = (41.3961, 2.1943), (41.4036, 2.1744)  # (latitude, longitude)


def kpi_errors(entity: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(
        KPI_SCHEMA, registry=KPI_REFS, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in
            validator.iter_errors(entity)]  # fmt: skip


def key_values_of(entity: dict[str, Any]) -> dict[str, Any]:
    """A normalised entity in key-values form: each attribute a Property or GeoProperty, and
    then its value, as NGSI-LD relates the two representations."""
    simple: dict[str, Any] = {}
    for name, attribute in entity.items():
        if name in ("id", "type", "@context"):
            simple[name] = attribute
            continue
        assert attribute["type"] in ("Property", "GeoProperty"), (name, attribute)
        value = attribute["value"]
        # A typed value ({"@type": "DateTime", "@value": …}) is its `@value` in key-values.
        if isinstance(value, dict) and value.get("@type") == "DateTime":
            value = value["@value"]
        simple[name] = value
    return simple


@contextmanager
def _kpi_city(url: str) -> Iterator[CityClient]:
    """Testville with two geolocated sites and flows over two days, in several hours."""
    with city_client(url) as c:
        for slug, (lat, lon) in (("lab-geo", LAB_AT), ("hub-geo", HUB_AT)):
            body = {"slug": slug, "name": slug, "latitude": lat, "longitude": lon}
            assert c.post(f"/v1/cities/{CITY}/sites", json=body).status_code == 201
        ingest(c, [
            event([flow(quantity=3), flow("consume", "metal", 1, "kg", ring="beyond"),
                   flow("produce", "part", 2, "count")], time="2026-03-10T10:15:00+01:00"),
            event(flow(quantity=2), source=f"/{CITY}/lab-geo", time="2026-03-10T23:30:00+01:00"),
            event(flow("discard", "plastic", 0.5, "kg", fate="recycle"),
                  source=f"/{CITY}/hub-geo", time="2026-03-11T08:00:00+01:00"),
        ])  # fmt: skip
        yield c


@pytest.fixture
def kpi_city(sqlite_url: str) -> Iterator[CityClient]:
    with _kpi_city(sqlite_url) as c:
        yield c


@pytest.fixture
def kpi_city_on_both(db_url: str) -> Iterator[CityClient]:
    """The same, on SQLite and on PostgreSQL."""
    with _kpi_city(db_url) as c:
        yield c


def test_the_format_checker_checks_dates_and_date_times() -> None:
    # Without its optional libraries a format checker passes any string: make sure it does not.
    assert {"date", "date-time"} <= set(Draft202012Validator.FORMAT_CHECKER.checkers)
    assert kpi_errors(
        {
            "id": "urn:ngsi-ld:KeyPerformanceIndicator:x",
            "type": "KeyPerformanceIndicator",
            "calculationPeriod": {"from": "2026-03-10T10"},
        }
    )
    assert kpi_errors({"id": "x", "type": "KeyPerformanceIndicator", "dateModified": "yesterday"})


@pytest.mark.parametrize("interval", ["hour", "day", "week", "month", "year"])
@pytest.mark.parametrize("options", [None, "keyValues"])
def test_every_interval_of_the_ngsi_ld_export_follows_the_kpi_data_model(
    kpi_city: CityClient, interval: str, options: str | None
) -> None:
    params = {"interval": interval, "from": "2026-03-10", "to": "2026-03-11",
              "names": "input_kg,local_input_share,produced_count,waste_kg"}  # fmt: skip
    if options:
        params["options"] = options
    response = kpi_city.get(f"/v1/cities/{CITY}/ngsi-ld", params=params)
    assert response.status_code == 200, response.text
    entities = response.json()
    assert len(entities) >= 4
    for entity in entities:
        simple = entity if options else key_values_of(entity)
        assert not kpi_errors(simple), (entity["id"], kpi_errors(simple))
        # Where and for whom: the sites' places (GeoJSON: longitude first) and the city.
        assert simple["location"] == {
            "type": "MultiPoint", "coordinates": [[HUB_AT[1], HUB_AT[0]], [LAB_AT[1], LAB_AT[0]]]
        }  # fmt: skip
        assert simple["areaServed"] == "Testville"
        # Every window shown holds stored events: each says when its figures last changed.
        assert simple["dateModified"].endswith("Z"), entity["id"]
        if not options:
            assert entity["dateModified"]["value"]["@type"] == "DateTime"
            assert entity["location"]["type"] == "GeoProperty"
            observed = entity["kpiValue"]["observedAt"]
            assert observed.endswith("Z") and datetime.fromisoformat(observed)

    if interval == "hour" and not options:
        by_id = {e["id"]: e for e in entities}
        late = by_id[f"urn:ngsi-ld:KeyPerformanceIndicator:{CITY}:input_kg:2026-03-10T23:00+01:00"]
        # 23:00 in Madrid is within the 10th there, and 22:00 UTC
        assert late["calculationPeriod"]["value"] == {"from": "2026-03-10", "to": "2026-03-10"}
        assert late["kpiValue"]["observedAt"] == "2026-03-10T22:00:00Z"
        assert late["kpiValue"]["value"] == 2


def test_date_modified_is_when_the_figures_of_the_window_last_changed(
    kpi_city_on_both: CityClient,
) -> None:
    kpi_city = kpi_city_on_both
    # The recompute wrote when each hour's rollups changed (now); put known times (UTC) on
    # the three hours holding events, in an order unlike the hours' own.
    changed = {("2026-03-10", 10): "2026-03-12T09:00", ("2026-03-10", 23): "2026-03-12T10:00",
               ("2026-03-11", 8): "2026-03-12T08:00"}  # fmt: skip
    with kpi_city.factory.begin() as s:
        rows = s.scalars(select(RollupChange)).all()
        assert {(r.day.isoformat(), r.hour) for r in rows} == set(changed)
        for r in rows:
            r.changed_at = datetime.fromisoformat(changed[(r.day.isoformat(), r.hour)] + "+00:00")

    def modified(interval: str) -> dict[str, str]:
        params = {"interval": interval, "from": "2026-03-10", "to": "2026-03-11",
                  "names": "input_kg", "options": "keyValues"}  # fmt: skip
        entities = kpi_city.get(f"/v1/cities/{CITY}/ngsi-ld", params=params).json()
        return {e["id"].split(":input_kg:")[1]: e["dateModified"] for e in entities}

    # input_kg has a value where filament came in: 10:00 and 23:00 on the 10th. The 10th's
    # latest change is 10:00 UTC (its 23:00 hour), its 10:00 hour's 09:00.
    assert modified("day") == {"2026-03-10": "2026-03-12T10:00:00Z"}
    assert modified("hour") == {"2026-03-10T10:00+01:00": "2026-03-12T09:00:00Z",
                                "2026-03-10T23:00+01:00": "2026-03-12T10:00:00Z"}  # fmt: skip
    assert modified("month") == {"2026-03": "2026-03-12T10:00:00Z"}

    # A retraction of the 10:15 event, sent now on the 11th: it changes the 10th's figures
    # (and its 10:00 hour's), not the 11th's, wherever it lies itself.
    before = datetime.now(UTC)
    with kpi_city.factory.begin() as s:
        target = s.scalars(
            select(Event).where(Event.day == date(2026, 3, 10), Event.hour == 10)
        ).one()
        source, target_id = target.source, target.event_id
    ingest(kpi_city, [event({"id": target_id}, source=source, type="fabcity.event.retracted",
                            time="2026-03-11T12:00:00+01:00")])  # fmt: skip
    after = modified("hour")
    # The retracted hour has no input left, and so no entity; the 23:00 hour is untouched.
    assert after == {"2026-03-10T23:00+01:00": "2026-03-12T10:00:00Z"}
    day = modified("day")["2026-03-10"]
    assert before <= datetime.fromisoformat(day) <= datetime.now(UTC)


def test_date_modified_follows_a_design_registered_after_its_flows(kpi_city: CityClient) -> None:
    # A design's mass and licence feed the figures of the windows its flows lie in: its
    # registration changes them after the events did.
    url = "https://designs.example.org/okh/stool.toml"
    ingest(kpi_city, [event(flow("produce", "part", 1, "count", design=url),
                            time="2026-03-11T12:00:00+01:00")])  # fmt: skip
    with kpi_city.factory.begin() as s:
        for r in s.scalars(select(RollupChange)):
            r.changed_at = datetime(2026, 3, 12, 8, tzinfo=UTC)

    def modified() -> dict[str, str]:
        params = {"interval": "day", "from": "2026-03-10", "to": "2026-03-11",
                  "names": "produced_count", "options": "keyValues"}  # fmt: skip
        entities = kpi_city.get(f"/v1/cities/{CITY}/ngsi-ld", params=params).json()
        return {e["id"].split(":produced_count:")[1]: e["dateModified"] for e in entities}

    # Parts were produced on the 10th (2) and one of the stool design on the 11th.
    assert modified() == {
        "2026-03-10": "2026-03-12T08:00:00Z",
        "2026-03-11": "2026-03-12T08:00:00Z",
    }
    before = datetime.now(UTC)
    stool = (OKH / "stool.toml").read_bytes()
    assert kpi_city.post("/v1/designs", params={"url": url}, content=stool,
                         headers=TOML).status_code == 201  # fmt: skip
    jobs.recompute_dirty_windows(kpi_city.factory, 100)  # as the worker does, nudged
    after = modified()
    assert after["2026-03-10"] == "2026-03-12T08:00:00Z"
    assert before <= datetime.fromisoformat(after["2026-03-11"]) <= datetime.now(UTC)


def test_ngsi_ld_reads_no_events_on_the_request_path(kpi_city_on_both: CityClient) -> None:
    """The query side reads rollups only: `dateModified` comes from `rollup_changes`, which
    the recompute writes, not from scanning a window's events at every request."""
    from sqlalchemy import event as sa_event

    engine = kpi_city_on_both.factory.kw["bind"]
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa_event.listen(engine, "before_cursor_execute", seen)
    try:
        for interval in ("hour", "day", "month"):
            params = {"interval": interval, "from": "2026-03-10", "to": "2026-03-11"}
            response = kpi_city_on_both.get(f"/v1/cities/{CITY}/ngsi-ld", params=params)
            assert response.status_code == 200, response.text
            assert all("dateModified" in e for e in response.json())
    finally:
        sa_event.remove(engine, "before_cursor_execute", seen)
    assert statements
    assert not [s for s in statements if re.search(r"\b(FROM|JOIN)\s+events\b", s)], statements
