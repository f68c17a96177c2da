"""`POST /v1/events` as the official CloudEvents SDK sends to it: structured, batch and binary
mode, bytes data (`data_base64`), a `datacontenttype` with parameters, and extension attribute
names the specification does not allow. On SQLite and PostgreSQL: what is stored matters."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings.http import HTTPMessage, to_binary_event, to_structured_event
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.core.models import Event, Flow
from services.http.app import create_app
from tests.conftest import settings_for
from tests.services.http.support import BATCH, LAB, PRINTER, SINGLE, assert_problem
from tests.support.city import flow, register
from workers.dispatch import NoDispatch

WHEN = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    register(factory)
    yield factory
    engine.dispose()


@pytest.fixture
def client(db_url: str, sessions: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(settings_for(db_url), "both", factory=sessions, dispatcher=NoDispatch())
    with TestClient(app) as client:
        yield client


def sdk_event(
    id: str,
    data: dict[str, Any] | bytes | None = None,
    type: str = "fabcity.flow",
    source: str = LAB,
    **attributes: Any,
) -> SdkEvent:
    return SdkEvent(
        {"id": id, "source": source, "type": type, "time": WHEN, **attributes},
        flow() if data is None else data,
    )


def send(client: TestClient, message: HTTPMessage) -> Response:
    response: Response = client.post("/v1/events", content=message.body, headers=message.headers)
    return response


def stored(sessions: sessionmaker[Session]) -> dict[str, dict[str, Any]]:
    """The stored events' payloads, by id."""
    with sessions() as s:
        return {e.event_id: e.payload for e in s.scalars(select(Event))}


class TestStructuredMode:
    def test_the_sdk_structured_event_is_stored(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        response = send(client, to_structured_event(sdk_event("s-1", traceparent="00-ab-cd-01")))

        assert response.status_code == 202, response.text
        payload = stored(sessions)["s-1"]
        assert payload["data"] == flow()
        assert payload["traceparent"] == "00-ab-cd-01"

    def test_a_batch_of_sdk_events_is_stored(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        events = [sdk_event(f"b-{n}", flow(quantity=n)) for n in (1, 2, 3)]
        body = b"[" + b",".join(JSONFormat().write(e) for e in events) + b"]"

        response = client.post("/v1/events", content=body, headers={"content-type": BATCH})

        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == 3
        assert {k: v["data"]["quantity"] for k, v in stored(sessions).items()} == {
            "b-1": 1,
            "b-2": 2,
            "b-3": 3,
        }

    def test_bytes_data_is_decoded_from_data_base64_and_stored_as_data(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        # The SDK writes bytes data as `data_base64`; this is how a client that already holds
        # the JSON text of its data sends it.
        reading = orjson.dumps({"energy_kwh_total": 12.5})
        event = sdk_event("m-1", reading, type="fabcity.meter.reading", source=PRINTER)
        message = to_structured_event(event)
        assert b"data_base64" in message.body

        response = send(client, message)

        assert response.status_code == 202, response.text
        payload = stored(sessions)["m-1"]
        # Stored with its data readable, as every other event: the meters read it there.
        assert payload["data"] == {"energy_kwh_total": 12.5}
        assert "data_base64" not in payload

    def test_data_base64_that_is_not_json_is_refused_saying_why(self, client: TestClient) -> None:
        body = {
            "specversion": "1.0",
            "id": "x",
            "source": LAB,
            "type": "fabcity.flow",
            "data_base64": base64.b64encode(b"not json").decode(),
        }
        response = client.post(
            "/v1/events", content=orjson.dumps(body), headers={"content-type": SINGLE}
        )
        assert "data_base64" in assert_problem(response, 422)["detail"]

    def test_a_datacontenttype_with_a_charset_is_accepted(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        event = sdk_event("c-1", datacontenttype="application/json; charset=utf-8")

        response = send(client, to_structured_event(event))

        assert response.status_code == 202, response.text
        assert stored(sessions)["c-1"]["datacontenttype"] == "application/json; charset=utf-8"

    def test_data_that_is_not_json_is_refused(self, client: TestClient) -> None:
        event = sdk_event("t-1", b"hello", datacontenttype="text/plain")
        assert assert_problem(send(client, to_structured_event(event)), 422)


class TestBinaryMode:
    def test_the_sdk_binary_event_is_stored_with_its_attributes(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        event = sdk_event(
            "bin-1",
            flow(quantity=2),
            subject="spool 7",
            traceparent="00-ab-cd-01",
            datacontenttype="application/json",
        )
        message = to_binary_event(event)
        assert message.headers["ce-specversion"] == "1.0"

        response = send(client, message)

        assert response.status_code == 202, response.text
        payload = stored(sessions)["bin-1"]
        assert payload["source"] == LAB
        assert payload["type"] == "fabcity.flow"
        assert payload["subject"] == "spool 7"
        assert payload["traceparent"] == "00-ab-cd-01"
        assert payload["data"] == flow(quantity=2)
        with sessions() as s:
            only = s.scalars(select(Flow)).one()
            assert only.amount == 2_000_000
            # The time came in a header, percent-encoded: it is the event's, not the receipt's.
            assert s.scalars(select(Event.time)).one().replace(tzinfo=UTC) == WHEN

    def test_binary_mode_with_application_json_is_not_read_as_a_structured_event(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        # The body is the data: read as a structured event it would lack `specversion`.
        message = to_binary_event(sdk_event("bin-2", datacontenttype="application/json"))
        assert message.headers["content-type"] == "application/json"

        assert send(client, message).status_code == 202
        assert stored(sessions)["bin-2"]["data"] == flow()

    def test_a_charset_in_the_content_type_is_accepted(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        event = sdk_event("bin-3", datacontenttype="application/json; charset=utf-8")
        assert send(client, to_binary_event(event)).status_code == 202
        assert stored(sessions)["bin-3"]["datacontenttype"] == "application/json; charset=utf-8"

    def test_a_binary_event_the_models_refuse_is_a_422(self, client: TestClient) -> None:
        event = sdk_event("bin-4", {"action": "consume"}, datacontenttype="application/json")
        assert "data" in assert_problem(send(client, to_binary_event(event)), 422)["detail"]

    def test_data_that_is_not_json_is_a_415(self, client: TestClient) -> None:
        event = sdk_event("bin-5", b"hello", datacontenttype="text/plain")
        assert_problem(send(client, to_binary_event(event)), 415)

    def test_ce_headers_without_specversion_are_refused_not_ignored(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        headers = {"content-type": "application/json", "ce-id": "x", "ce-source": LAB}
        response = client.post("/v1/events", content=orjson.dumps(flow()), headers=headers)
        assert "ce-specversion" in assert_problem(response, 400)["detail"]
        assert stored(sessions) == {}


class TestExtensionNames:
    """Only lower-case a-z and 0-9, at most 20 characters: what SDK receivers accept."""

    BAD = ("my_ext", "Trace-Id", "a" * 21)

    def test_bad_names_are_refused_by_index_in_a_batch(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        good = JSONFormat().write(sdk_event("good", extension20="x"))
        bad = [
            orjson.dumps(orjson.loads(JSONFormat().write(sdk_event(f"bad-{n}"))) | {name: "x"})
            for n, name in enumerate(self.BAD)
        ]
        body = b"[" + b",".join([good, *bad]) + b"]"

        response = client.post("/v1/events", content=body, headers={"content-type": BATCH})

        assert response.status_code == 202, response.text
        result = response.json()
        assert result["accepted"] == 1
        assert [r["index"] for r in result["rejected"]] == [1, 2, 3]
        for rejected, name in zip(result["rejected"], self.BAD, strict=True):
            assert repr(name) in rejected["error"]
        assert list(stored(sessions)) == ["good"]

    def test_a_bad_name_in_a_binary_header_is_refused(
        self, client: TestClient, sessions: sessionmaker[Session]
    ) -> None:
        message = to_binary_event(sdk_event("h-1", datacontenttype="application/json"))
        headers = message.headers | {"ce-Trace-Id": "abc"}

        response = client.post("/v1/events", content=message.body, headers=headers)

        assert "'trace-id'" in assert_problem(response, 422)["detail"]
        assert stored(sessions) == {}
