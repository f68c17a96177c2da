"""`POST /v1/designs` takes a manifest as TOML, YAML or JSON, and its OpenAPI document says
so: a client generated from it can send each."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from services.http.app import create_app
from tests.conftest import settings_for
from tests.fixtures import OKH
from workers.dispatch import NoDispatch


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    engine = make_engine(sqlite_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    app = create_app(settings_for(sqlite_url), "both", factory=factory, dispatcher=NoDispatch())
    with TestClient(app) as c:
        yield c
    engine.dispose()


def test_the_openapi_document_declares_every_body_the_import_takes(client: TestClient) -> None:
    body = client.get("/openapi.json").json()["paths"]["/v1/designs"]["post"]["requestBody"]
    assert sorted(body["content"]) == ["application/json", "application/toml", "application/yaml"]


def test_a_json_manifest_is_imported(client: TestClient) -> None:
    doc = tomllib.loads((OKH / "ohloom.toml").read_text())
    r = client.post(
        "/v1/designs",
        params={"url": "https://designs.example.org/okh/ohloom.json"},
        content=json.dumps(doc),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 201, r.text
    design = r.json()
    assert (design["title"], design["mass_kg"], design["is_open"]) == ("OHLOOM", 2.36, True)
    assert (design["licence"], design["licence_text"]) == ("CC-BY-SA-4.0", "CC-BY-SA-4.0")
