"""The open-standards endpoints over HTTP, and `fabcity import` as a real process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from services.http.app import create_app
from tests.conftest import settings_for
from tests.fixtures import OKH, OKW
from tests.support.city import CITY, register
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
