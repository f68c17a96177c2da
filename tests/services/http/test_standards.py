"""The open-standards endpoints over HTTP, `fabcity import` as a real process, and the NGSI-LD
export checked against the Smart Data Models' own JSON Schema."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from services.http.app import create_app
from tests.conftest import settings_for
from tests.fixtures import NGSI_LD, OKH, OKW
from tests.support.api import CityClient, city_client, ingest
from tests.support.city import CITY, event, flow, register
from tests.support.procs import FABCITY
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
    assert "5 designs created, 0 updated, 4 refused" in okh.stdout
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
        simple[name] = attribute["value"]
    return simple


@pytest.fixture
def kpi_city(sqlite_url: str) -> Iterator[CityClient]:
    """Testville with two geolocated sites and flows over two days, in several hours."""
    with city_client(sqlite_url) as c:
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
        if not options:
            assert entity["location"]["type"] == "GeoProperty"
            observed = entity["kpiValue"]["observedAt"]
            assert observed.endswith("Z") and datetime.fromisoformat(observed)

    if interval == "hour" and not options:
        by_id = {e["id"]: e for e in entities}
        late = by_id[f"urn:ngsi-ld:KeyPerformanceIndicator:{CITY}:input_kg:2026-03-10T23"]
        # 23:00 in Madrid is within the 10th there, and 22:00 UTC
        assert late["calculationPeriod"]["value"] == {"from": "2026-03-10", "to": "2026-03-10"}
        assert late["kpiValue"]["observedAt"] == "2026-03-10T22:00:00Z"
        assert late["kpiValue"]["value"] == 2
