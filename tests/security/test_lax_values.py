"""Values read loosely: what a sender did not mean must be refused, not guessed at."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.support.api import CityClient, city_client
from tests.support.city import CITY, DEVICE, SITE, event, flow

SINGLE = "application/cloudevents+json"


def post(client: CityClient, body: dict[str, Any]) -> Any:
    return client.post("/v1/events", content=orjson.dumps(body), headers={"content-type": SINGLE})


class TestEventValues:
    @pytest.fixture
    def client(self, sqlite_url: str) -> Iterator[CityClient]:
        with city_client(sqlite_url) as client:
            yield client

    @pytest.mark.parametrize("quantity", [True, False, "12", "1e9"])
    def test_a_quantity_must_be_a_json_number(self, client: CityClient, quantity: Any) -> None:
        # Lax parsing read `true` as 1 kg and "12" as 12 kg.
        response = post(client, event(flow(quantity=quantity)))
        assert response.status_code == 422, response.text
        assert "data.quantity" in response.json()["detail"]

    def test_an_integer_quantity_is_a_number(self, client: CityClient) -> None:
        assert post(client, event(flow(quantity=12))).status_code == 202

    @pytest.mark.parametrize("recycled", [1, 0, "yes", "true"])
    def test_a_flag_must_be_a_json_boolean(self, client: CityClient, recycled: Any) -> None:
        response = post(client, event(flow(recycled=recycled)))
        assert response.status_code == 422, response.text
        assert "data.recycled" in response.json()["detail"]

    @pytest.mark.parametrize("time", [1700000000, 1700000000.5, "1700000000", "2026-03-10"])
    def test_time_must_be_an_rfc_3339_string(self, client: CityClient, time: Any) -> None:
        # Read as Unix time, 1700000000 landed in November 2023 (and in milliseconds, in the
        # year 55,000 or a refusal): never what the sender meant by a number.
        body = event(flow())
        body["time"] = time
        response = post(client, body)
        assert response.status_code == 422, response.text
        assert "RFC 3339" in response.json()["detail"]

    @pytest.mark.parametrize(
        "time",
        [
            "2026-03-10T10:00:00Z",
            "2026-03-10t10:00:00.123456789+01:00",
            "2026-03-10 10:00:00-05:00",
        ],
    )
    def test_rfc_3339_times_are_taken(self, client: CityClient, time: str) -> None:
        assert post(client, event(flow(), time=time)).status_code == 202

    def test_a_machine_jobs_times_must_be_rfc_3339_strings(self, client: CityClient) -> None:
        job = {"status": "completed", "started": 1700000000, "ended": "2026-03-10T10:00:00Z"}
        body = event(job, type="fabcity.machine.job", source=f"/{CITY}/{SITE}/{DEVICE}")
        response = post(client, body)
        assert response.status_code == 422, response.text
        assert "data.started" in response.json()["detail"]
        assert "RFC 3339" in response.json()["detail"]

    @pytest.mark.parametrize("online", [1, "yes", "true"])
    def test_a_device_status_must_be_a_json_boolean(self, client: CityClient, online: Any) -> None:
        body = event(
            {"online": online}, type="fabcity.device.status", source=f"/{CITY}/{SITE}/{DEVICE}"
        )
        response = post(client, body)
        assert response.status_code == 422, response.text
        assert "data.online" in response.json()["detail"]

    @pytest.mark.parametrize(
        "url",
        ["javascript:alert(1)", "data:text/html,<script>", "file:///etc/passwd", "https:///x"],
    )
    @pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
    def test_a_flows_design_must_be_an_http_url(
        self, client: CityClient, url: str, batch: bool
    ) -> None:
        # Both readers: a batch's plain flow events take the fast one (schemas/fast.py).
        body = event(flow(action="produce", resource="part", unit="count", design={"url": url}))
        if batch:
            response = client.post(
                "/v1/events",
                content=orjson.dumps([body]),
                headers={"content-type": "application/cloudevents-batch+json"},
            )
            assert response.status_code == 422, response.text
            assert "design" in str(response.json()), response.text
        else:
            response = post(client, body)
            assert response.status_code == 422, response.text
            assert "data.design" in response.json()["detail"]

    def test_a_design_at_an_https_url_is_taken(self, client: CityClient) -> None:
        design = {"url": "https://example.org/okh/chair.yml"}
        body = event(flow(action="produce", resource="part", unit="count", design=design))
        assert post(client, body).status_code == 202
