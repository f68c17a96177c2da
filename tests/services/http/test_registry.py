"""The registry through the API: cities, sites, devices and resources."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.services.http.support import (
    LAB,
    assert_problem,
    post,
)
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow

BARCELONA = {
    "slug": "barcelona",
    "name": "Barcelona",
    "country": "ES",
    "timezone": "Europe/Madrid",
    "population": 1_620_000,
}


class TestCities:
    """The registry's cities: created, read, and refused when invalid or taken."""

    def test_create_and_read_a_city(self, client: TestClient) -> None:
        created = client.post("/v1/cities", json=BARCELONA)

        assert created.status_code == 201, created.text
        # A city in use has no `retired_at`.
        assert created.json() == {**BARCELONA, "retired_at": None}
        assert client.get("/v1/cities/barcelona").json() == {**BARCELONA, "retired_at": None}
        assert [c["slug"] for c in client.get("/v1/cities").json()["items"]] == ["barcelona", CITY]

    def test_a_duplicate_city_is_a_409_problem(self, client: TestClient) -> None:
        assert client.post("/v1/cities", json=BARCELONA).status_code == 201
        body = assert_problem(client.post("/v1/cities", json=BARCELONA), 409)
        assert "barcelona" in body["detail"]

    @pytest.mark.parametrize("timezone", ["Mars/Olympus_Mons", "CET+1", "../etc/passwd"])
    def test_an_unknown_time_zone_is_a_422_problem(self, client: TestClient, timezone: str) -> None:
        body = assert_problem(
            client.post("/v1/cities", json={**BARCELONA, "timezone": timezone}), 422
        )
        assert "time zone" in body["detail"]
        assert client.get("/v1/cities/barcelona").status_code == 404

    @pytest.mark.parametrize(
        "change",
        [{"slug": "Barcelona"}, {"slug": "-bcn"}, {"country": "ESP"}, {"population": -1}, {"x": 1}],
    )
    def test_an_invalid_city_is_a_422_problem(
        self, client: TestClient, change: dict[str, Any]
    ) -> None:
        assert_problem(client.post("/v1/cities", json={**BARCELONA, **change}), 422)


class TestSitesAndDevices:
    """The registry's sites and devices, under their city."""

    def test_create_and_list_sites_and_devices(self, client: TestClient) -> None:
        assert client.post("/v1/cities", json=BARCELONA).status_code == 201
        site = {
            "slug": "ateneu",
            "name": "Ateneu de Fabricació",
            "kind": "fablab",
            "latitude": 41.4,
            "longitude": 2.19,
        }
        created = client.post("/v1/cities/barcelona/sites", json=site)
        assert created.status_code == 201, created.text
        assert created.json() == {**site, "city": "barcelona", "retired_at": None}
        sites = client.get("/v1/cities/barcelona/sites").json()["items"]
        assert sites == [{**site, "city": "barcelona", "retired_at": None}]

        device = {"slug": "laser", "name": "Laser", "kind": "laser", "adapter": "octoprint"}
        made = client.post("/v1/cities/barcelona/sites/ateneu/devices", json=device)
        assert made.status_code == 201, made.text
        expected: dict[str, Any] = {
            **device,
            "settings": {},
            "city": "barcelona",
            "site": "ateneu",
            # Nothing heard from it yet: unknown, not offline.
            "online": None,
            "last_seen": None,
            "listening_since": None,  # no bridge runs here
            "retired_at": None,
        }
        assert made.json() == expected
        assert client.get("/v1/cities/barcelona/sites/ateneu/devices").json()["items"] == [expected]

    def test_a_new_device_can_send_events(self, client: TestClient) -> None:
        device = {"slug": "laser", "name": "Laser"}
        assert (
            client.post(f"/v1/cities/{CITY}/sites/{SITE}/devices", json=device).status_code == 201
        )
        assert post(client, event(flow(), source=f"{LAB}/laser")).status_code == 202

    def test_the_test_city_is_listed(self, client: TestClient) -> None:
        sites = client.get(f"/v1/cities/{CITY}/sites").json()["items"]
        assert [s["slug"] for s in sites] == [OTHER_SITE, SITE]
        devices = client.get(f"/v1/cities/{CITY}/sites/{SITE}/devices").json()["items"]
        assert [d["slug"] for d in devices] == [DEVICE]

    def test_a_duplicate_site_is_a_409_problem(self, client: TestClient) -> None:
        response = client.post(f"/v1/cities/{CITY}/sites", json={"slug": SITE, "name": "Again"})
        assert_problem(response, 409)

    @pytest.mark.parametrize(
        ("method", "path", "json"),
        [
            ("GET", "/v1/cities/atlantis", None),
            ("GET", "/v1/cities/atlantis/sites", None),
            ("POST", "/v1/cities/atlantis/sites", {"slug": "x", "name": "X"}),
            ("GET", f"/v1/cities/{CITY}/sites/nowhere/devices", None),
            ("POST", f"/v1/cities/{CITY}/sites/nowhere/devices", {"slug": "x", "name": "X"}),
        ],
    )
    def test_unknown_city_or_site_is_a_404_problem(
        self, client: TestClient, method: str, path: str, json: dict[str, str] | None
    ) -> None:
        body = assert_problem(client.request(method, path, json=json), 404)
        assert "atlantis" in body["detail"] or "nowhere" in body["detail"]


class TestResources:
    """The registry's resources, each with its canonical unit."""

    def test_resources_are_listed_with_canonical_units(self, client: TestClient) -> None:
        resources = {r["name"]: r for r in client.get("/v1/resources").json()["items"]}
        assert resources["filament"]["unit"] == "kg"
        assert resources["electricity"]["unit"] == "kWh"
        assert resources["part"]["unit"] == "count"
