"""The HTTP API end to end on SQLite: ingest, the registry, and metrics read from rollups.

Metric values are worked out by hand from the events each test sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.core.models import Event, Flow, PendingRollup
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow, register
from workers.dispatch import NoDispatch
from workers.jobs import recompute_dirty_windows

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PROBLEM = "application/problem+json"
LAB = f"/{CITY}/{SITE}"
HUB = f"/{CITY}/{OTHER_SITE}"
PRINTER = f"/{CITY}/{SITE}/{DEVICE}"
METRICS_URL = f"/v1/cities/{CITY}/metrics"
ALL_METRICS = "input_kg,local_input_share,produced_count,waste_kg"

MakeClient = Callable[..., TestClient]
Sessions = sessionmaker[Session]


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    """The test's own session factory on a migrated SQLite database, with `testville`."""
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    yield factory
    engine.dispose()


@pytest.fixture
def make_client(
    sqlite_url: str, sessions: sessionmaker[Session]
) -> Iterator[Callable[..., TestClient]]:
    """A client of the app in role `both`, with settings overridden per test."""
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = settings_for(sqlite_url, **overrides)
        app = create_app(settings, "both", factory=sessions, dispatcher=NoDispatch())
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def post(client: TestClient, body: Any, content_type: str = SINGLE) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    response: Response = client.post(
        "/v1/events", content=raw, headers={"content-type": content_type}
    )
    return response


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with the given status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"] and body["detail"]
    return body


def metrics(
    client: TestClient, first: str, last: str, names: str = ALL_METRICS, **params: str
) -> dict[str, Any]:
    response = client.get(METRICS_URL, params={"names": names, "from": first, "to": last, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def series(body: dict[str, Any], name: str, key: str | None = None) -> list[dict[str, Any]]:
    [found] = [s for s in body["series"] if s["name"] == name and s["key"] == key]
    points: list[dict[str, Any]] = found["points"]
    return points


class TestOneEvent:
    """`POST /v1/events` with one structured event: stored with its flows, or a 422."""

    def test_one_event_is_accepted_and_stored(self, client: TestClient, sessions: Sessions) -> None:
        response = post(client, event(flow("consume", "filament", 2, "kg", "city"), id="e1"))

        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
        with sessions() as s:
            stored = s.scalars(select(Event)).one()
            assert (stored.source, stored.event_id, stored.type) == (LAB, "e1", "fabcity.flow")
            assert stored.device_id is None
            only = s.scalars(select(Flow)).one()
            assert (only.action, only.resource, only.amount, only.ring) == (
                "consume",
                "filament",
                2_000_000,  # millionths of a kg
                "city",
            )
            # A person's report for a site is `reported`; only a device's own is `measured`.
            assert only.state == "reported"
            assert only.event_pk == stored.id
            assert stored.day == date(2026, 3, 10)
            # It is marked for the worker in the same transaction.
            mark = s.scalars(select(PendingRollup)).one()
            assert (mark.event_lo, mark.event_hi, mark.flow_lo) == (stored.id, stored.id, only.id)

    def test_a_device_event_is_measured(self, client: TestClient, sessions: Sessions) -> None:
        assert post(client, event(flow(), source=PRINTER)).status_code == 202
        with sessions() as s:
            assert s.scalars(select(Flow.state)).one() == "measured"
            assert s.scalars(select(Event.device_id)).one() is not None

    def test_extension_attributes_are_kept_in_the_stored_event(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        body = event(flow())
        body["traceparent"] = "x"
        assert post(client, body).status_code == 202
        with sessions() as s:
            assert s.scalars(select(Event.payload)).one()["traceparent"] == "x"

    def test_grams_are_stored_as_kilograms(self, client: TestClient, sessions: Sessions) -> None:
        data = [flow("consume", "filament", 250, "g"), flow("consume", "electricity", 1500, "Wh")]
        assert post(client, event(data)).status_code == 202
        with sessions() as s:
            stored = dict(s.execute(select(Flow.resource, Flow.amount)).tuples().all())
        # millionths of kg and of kWh
        assert stored == {"filament": 250_000, "electricity": 1_500_000}

    def test_one_bad_event_is_a_422_problem_and_nothing_is_stored(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        response = post(client, event(flow(resource="unobtainium")))

        body = assert_problem(response, 422)
        assert "unobtainium" in body["detail"]
        assert body["rejected"] == [{"index": 0, "error": body["detail"]}]
        assert count(sessions, Event) == 0


class TestBatches:
    """A batch: its good events stored as sent, its bad ones refused by index."""

    def test_a_batch_stores_each_event_as_it_was_sent(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        # A batch's events reach ingest as their JSON texts: a plain flow is read fast, a
        # shorthand by the models; both are stored as sent, extensions and all.
        plain = event(flow(), id="plain") | {"traceparent": "x"}
        shorthand = event(flow(ring="cell", design="https://example.org/okh.toml"), id="cell")
        assert post(client, [plain, shorthand], BATCH).json()["accepted"] == 2
        with sessions() as s:
            stored = {p["id"]: p for p in s.scalars(select(Event.payload))}
            rings = set(s.scalars(select(Flow.ring)))
        assert stored == {"plain": plain, "cell": shorthand}
        assert rings == {"city", "site"}

    def test_a_batch_stores_the_good_events_and_reports_the_bad_by_index(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        missing_quantity = flow()
        del missing_quantity["quantity"]
        batch = [
            event(flow(), id="good-1"),
            event(flow(resource="unobtainium")),
            event(flow("produce", "part", 2, "kg")),
            event(missing_quantity),
            event(flow(), source=f"/{CITY}/nowhere"),
            event(flow(), source=f"{LAB}/ghost"),
            event(flow(), source="/atlantis/lab"),
            42,
            event(flow(), id="good-2", source=PRINTER),
        ]

        response = post(client, batch, BATCH)

        assert response.status_code == 202, response.text
        result = response.json()
        assert (result["accepted"], result["duplicates"]) == (2, 0)
        errors = {r["index"]: r["error"] for r in result["rejected"]}
        assert sorted(errors) == [1, 2, 3, 4, 5, 6, 7]
        assert "unknown resource 'unobtainium'" in errors[1]
        # The unit error names the resource, its canonical unit and the unit sent.
        assert "'part'" in errors[2] and "'count'" in errors[2] and "'kg'" in errors[2]
        assert "quantity" in errors[3] and "required" in errors[3].lower()
        assert "no site 'nowhere'" in errors[4]
        assert "no device 'ghost'" in errors[5]
        assert "'atlantis'" in errors[6]
        assert "JSON object" in errors[7]
        with sessions() as s:
            assert sorted(s.scalars(select(Event.event_id))) == ["good-1", "good-2"]
        assert count(sessions, Flow) == 2

    def test_a_field_error_in_data_is_located_under_data(self, client: TestClient) -> None:
        # The sender has to find the field in their own JSON: `data.quantity`, not the names of
        # the server's validators, and not a second, misleading complaint that `data` is no list.
        missing_quantity = flow()
        del missing_quantity["quantity"]

        [rejected] = post(client, [event(missing_quantity), event(flow())], BATCH).json()[
            "rejected"
        ]

        assert "data.quantity" in rejected["error"]
        assert "function-after" not in rejected["error"]
        assert "valid list" not in rejected["error"]

    def test_an_event_of_a_batch_that_is_not_utf8_is_refused_by_index(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        good = orjson.dumps(event(flow(), id="good"))
        bad = orjson.dumps(event(flow(), id="bad")).replace(b'"bad"', b'"b\xffd"')
        response = client.post(
            "/v1/events", content=b"[" + good + b"," + bad + b"]", headers={"content-type": BATCH}
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["accepted"] == 1
        assert body["rejected"][0]["index"] == 1 and "UTF-8" in body["rejected"][0]["error"]
        assert count(sessions, Event) == 1

    def test_a_nul_character_in_a_batch_is_refused_by_index(self, client: TestClient) -> None:
        response = post(client, [event(flow(material="PLA\x00"), id="nul")], BATCH)
        problem = assert_problem(response, 422)
        assert "NUL character" in problem["detail"]

    def test_a_batch_where_every_event_is_bad_is_a_422_and_stores_nothing(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        batch = [event(flow(resource="unobtainium")), event(flow(), source=f"/{CITY}/nowhere")]

        body = assert_problem(post(client, batch, BATCH), 422)

        assert [r["index"] for r in body["rejected"]] == [0, 1]
        assert "[0]" in body["detail"] and "unobtainium" in body["detail"]
        assert "[1]" in body["detail"] and "nowhere" in body["detail"]
        assert count(sessions, Event) == 0
        assert count(sessions, Flow) == 0
        assert count(sessions, PendingRollup) == 0

    def test_an_empty_batch_accepts_nothing(self, client: TestClient) -> None:
        response = post(client, [], BATCH)
        assert response.status_code == 202
        assert response.json() == {"accepted": 0, "duplicates": 0, "rejected": []}


class TestDuplicates:
    """Idempotence: an event is stored once by (source, id), however often it arrives."""

    def test_the_same_event_again_is_a_duplicate_stored_once(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        body = event(flow(), id="same")
        assert post(client, body).json() == {"accepted": 1, "duplicates": 0, "rejected": []}

        again = post(client, body)

        assert again.status_code == 202
        assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
        assert count(sessions, Event) == 1
        assert count(sessions, Flow) == 1

    def test_the_same_id_from_another_source_is_another_event(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        # Uniqueness is per (source, id): two sites may pick the same id.
        assert post(client, event(flow(), id="1", source=LAB)).json()["accepted"] == 1
        assert post(client, event(flow(), id="1", source=HUB)).json()["accepted"] == 1
        assert count(sessions, Event) == 2

    def test_a_batch_of_duplicates_only_is_not_an_error(self, client: TestClient) -> None:
        # Resending a batch that was stored (a retry after a lost response) must succeed.
        batch = [event(flow(), id="a"), event(flow(), id="b")]
        assert post(client, batch, BATCH).json()["accepted"] == 2
        response = post(client, batch, BATCH)
        assert response.status_code == 202
        assert response.json() == {"accepted": 0, "duplicates": 2, "rejected": []}

    def test_a_duplicate_inside_one_batch_is_stored_once(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        body = event(flow(quantity=3), id="twice")

        response = post(client, [body, event(flow(), id="other"), body], BATCH)

        assert response.status_code == 202
        assert response.json() == {"accepted": 2, "duplicates": 1, "rejected": []}
        assert count(sessions, Event) == 2
        with sessions() as s:
            assert sorted(s.scalars(select(Flow.amount))) == [1_000_000, 3_000_000]


class TestContentTypes:
    """The content type says one event or a batch; the body must match it."""

    def test_content_type_parameters_are_ignored(self, client: TestClient) -> None:
        response = post(client, event(flow()), content_type=f"{SINGLE}; charset=utf-8")
        assert response.status_code == 202, response.text

    @pytest.mark.parametrize("content_type", ["text/plain", "application/xml", ""])
    def test_a_wrong_content_type_is_a_415(self, client: TestClient, content_type: str) -> None:
        response = client.post(
            "/v1/events",
            content=orjson.dumps(event(flow())),
            headers={"content-type": content_type},
        )
        body = assert_problem(response, 415)
        assert SINGLE in body["detail"] and BATCH in body["detail"]

    def test_a_json_array_as_plain_json_is_a_batch(self, client: TestClient) -> None:
        response = post(client, [event(flow()), event(flow())], "application/json")
        assert response.status_code == 202
        assert response.json()["accepted"] == 2

    def test_a_json_array_sent_as_one_event_is_a_400(self, client: TestClient) -> None:
        body = assert_problem(post(client, [event(flow())], SINGLE), 400)
        assert BATCH in body["detail"]

    def test_an_object_sent_as_a_batch_is_a_400(self, client: TestClient) -> None:
        assert_problem(post(client, event(flow()), BATCH), 400)


class TestMalformedBodies:
    """Bodies that are not JSON, or JSON read one way only."""

    def test_malformed_json_is_a_400_problem(self, client: TestClient, sessions: Sessions) -> None:
        body = assert_problem(post(client, b'{"specversion": "1.0",'), 400)
        assert "not valid JSON" in body["detail"]
        assert count(sessions, Event) == 0

    def test_json_nested_too_deep_is_a_400(self, client: TestClient) -> None:
        nested = b"[" * 5000 + b"]" * 5000
        response = client.post(
            "/v1/events", content=b'[{"x": ' + nested + b"}]", headers={"content-type": BATCH}
        )
        assert_problem(response, 400)

    def test_in_a_repeated_key_the_last_one_counts(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        # As the stored event is read again by a rebuild: JSON parsers keep the last.
        text = orjson.dumps(event(flow(quantity=1), id="twice")).replace(
            b'"quantity":1', b'"quantity":1,"quantity":2'
        )
        for content_type in (BATCH, SINGLE):
            body = b"[" + text + b"]" if content_type == BATCH else text
            response = client.post(
                "/v1/events", content=body, headers={"content-type": content_type}
            )
            assert response.status_code == 202, response.text
        with sessions() as s:
            assert s.scalars(select(Flow.amount)).all() == [2_000_000]


class TestSizeLimits:
    """The limits on a body's bytes and a batch's events: a 413 past them."""

    def test_a_body_over_the_limit_is_a_413(
        self, make_client: MakeClient, sessions: Sessions
    ) -> None:
        client = make_client(max_body_bytes=600)
        small = event(flow())
        assert len(orjson.dumps(small)) <= 600
        assert post(client, small).status_code == 202

        big = [event(flow()) for _ in range(5)]
        assert len(orjson.dumps(big)) > 600
        body = assert_problem(post(client, big, BATCH), 413)
        assert "600" in body["detail"]
        assert count(sessions, Event) == 1

    def test_a_chunked_body_over_the_limit_is_a_413(self, make_client: MakeClient) -> None:
        # Without a Content-Length header the limit must still hold once the body is read.
        client = make_client(max_body_bytes=600)

        def chunks() -> Iterator[bytes]:
            yield b"["
            yield b" " * 1000
            yield b"]"

        response = client.post("/v1/events", content=chunks(), headers={"content-type": BATCH})
        assert "content-length" not in response.request.headers
        assert_problem(response, 413)

    def test_a_batch_over_the_event_limit_is_a_413(
        self, make_client: MakeClient, sessions: Sessions
    ) -> None:
        client = make_client(max_batch_events=3)
        assert post(client, [event(flow()) for _ in range(3)], BATCH).status_code == 202

        body = assert_problem(post(client, [event(flow()) for _ in range(4)], BATCH), 413)

        assert "4" in body["detail"] and "3" in body["detail"]
        assert count(sessions, Event) == 3


class TestLocalDay:
    """An event's day is its local day in the city's time zone."""

    def test_the_local_day_is_taken_in_the_citys_time_zone(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        # 23:30 UTC on 10 March is 00:30 on 11 March in Madrid (CET, UTC+1, before DST).
        late = event(flow(quantity=5), time="2026-03-10T23:30:00+00:00")
        assert post(client, late).status_code == 202
        with sessions() as s:
            assert s.scalars(select(Event.day)).one() == date(2026, 3, 11)
            assert s.scalars(select(Flow.day)).one() == date(2026, 3, 11)

        recompute_dirty_windows(sessions, 100)
        body = metrics(client, "2026-03-10", "2026-03-11", "input_kg")

        points = series(body, "input_kg")
        assert [p["start"] for p in points] == ["2026-03-10", "2026-03-11"]
        assert points[0]["value"] is None
        assert points[1]["value"] == 5.0

    def test_the_local_day_follows_summer_time(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        # In July Madrid is UTC+2: 22:30 UTC is already 00:30 the next day; 21:59 UTC is not.
        batch = [
            event(flow(), time="2026-07-01T22:30:00Z"),
            event(flow(), time="2026-07-01T21:59:00Z"),
        ]
        assert post(client, batch, BATCH).json()["accepted"] == 2
        with sessions() as s:
            assert sorted(s.scalars(select(Event.day))) == [date(2026, 7, 1), date(2026, 7, 2)]


def _ingest_march_tenth(client: TestClient) -> None:
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
    response = post(client, batch, BATCH)
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}


class TestMetricValues:
    """Metrics read from the rollups of ingested flows, and null with a reason without them."""

    def test_metrics_are_computed_from_the_ingested_flows(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        _ingest_march_tenth(client)
        # Two events at different hours of the same local day: two hourly windows.
        assert recompute_dirty_windows(sessions, 100) == 2

        body = metrics(client, "2026-03-10", "2026-03-10")

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
        self, client: TestClient, sessions: Sessions
    ) -> None:
        data = [
            flow("consume", "filament", 2, "kg", "city"),
            flow("consume", "filament", 1, "kg", "beyond"),
        ]
        assert post(client, event(data, source=PRINTER)).status_code == 202
        recompute_dirty_windows(sessions, 100)

        body = metrics(client, "2026-03-10", "2026-03-10", "input_kg,local_input_share")

        [inputs] = series(body, "input_kg")
        [share] = series(body, "local_input_share")
        assert inputs["value"] == 3.0
        assert share["value"] == pytest.approx(2 / 3, abs=1e-9)
        assert share["state"] == "measured"

    def test_a_day_without_events_is_null_with_a_reason_never_zero(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        _ingest_march_tenth(client)
        recompute_dirty_windows(sessions, 100)

        body = metrics(client, "2026-03-09", "2026-03-11")

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
        self, client: TestClient, sessions: Sessions
    ) -> None:
        assert post(client, event(flow("produce", "part", 1, "count", "site"))).status_code == 202
        recompute_dirty_windows(sessions, 100)

        body = metrics(client, "2026-03-10", "2026-03-10", "input_kg,local_input_share")

        for name in ("input_kg", "local_input_share"):
            [point] = series(body, name)
            assert point["value"] is None
            assert point["reason"] == "no inputs recorded"
            assert point["coverage"]["events"] == 1

    def test_metrics_before_the_recompute_are_not_made_up(self, client: TestClient) -> None:
        # The query reads rollups only; until the worker runs, there is nothing to report.
        _ingest_march_tenth(client)
        [point] = series(metrics(client, "2026-03-10", "2026-03-10"), "input_kg")
        assert point["value"] is None
        assert point["reason"]


class TestMetricGrouping:
    """`group_by`: one series per key."""

    def test_group_by_ring_gives_one_series_per_ring(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        _ingest_march_tenth(client)
        recompute_dirty_windows(sessions, 100)

        body = metrics(client, "2026-03-10", "2026-03-10", "input_kg", group_by="ring")

        assert body["group_by"] == "ring"
        # Every ring that has a flow that day: beyond (filament), city (filament, electricity,
        # plastic), site (parts, filament).
        assert [s["key"] for s in body["series"]] == ["beyond", "city", "site"]
        values = {s["key"]: s["points"][0]["value"] for s in body["series"]}
        assert values == {"beyond": 1.0, "city": 2.0, "site": 0.5}
        states = {s["key"]: s["points"][0]["state"] for s in body["series"]}
        assert states == {"beyond": "reported", "city": "reported", "site": "measured"}

    def test_group_by_site(self, client: TestClient, sessions: Sessions) -> None:
        post(client, event(flow(quantity=1), source=LAB))
        post(client, event(flow(quantity=2), source=HUB))
        recompute_dirty_windows(sessions, 100)

        body = metrics(client, "2026-03-10", "2026-03-10", "input_kg", group_by="site")

        values = {s["key"]: s["points"][0]["value"] for s in body["series"]}
        assert values == {OTHER_SITE: 2.0, SITE: 1.0}


class TestMetricWindows:
    """Windows longer than a day: sums of days, ratios of sums."""

    def test_a_month_sums_its_days_and_takes_the_ratio_of_sums(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        # Day 1: 1 kg local of 1 (100 %); day 2: 1 kg local of 4 (25 %). The month: 2 of 5.
        batch = [
            event(flow(quantity=1, ring="city"), time="2026-03-02T12:00:00+01:00"),
            event(flow(quantity=1, ring="city"), time="2026-03-20T12:00:00+01:00"),
            event(flow(quantity=3, ring="beyond"), time="2026-03-20T12:00:00+01:00"),
        ]
        assert post(client, batch, BATCH).json()["accepted"] == 3
        assert recompute_dirty_windows(sessions, 100) == 2

        body = metrics(
            client, "2026-03-01", "2026-04-30", "input_kg,local_input_share", interval="month"
        )

        inputs = series(body, "input_kg")
        share = series(body, "local_input_share")
        assert [p["start"] for p in inputs] == ["2026-03-01", "2026-04-01"]
        assert inputs[0]["value"] == 5.0
        assert share[0]["value"] == pytest.approx(0.4)
        assert inputs[0]["coverage"]["events"] == 3
        assert inputs[1]["value"] is None and share[1]["value"] is None

    def test_a_window_is_the_same_whatever_day_of_it_the_range_starts_on(
        self, client: TestClient, sessions: Sessions
    ) -> None:
        # 2 kg on 2 March and 3 kg on 20 March: March holds 5 kg. A point is labelled with the
        # first day of its window, so a range from 15 March must either report all of March under
        # `start: 2026-03-01`, or label the clipped window by the day it really starts on. A
        # March value of 3 kg labelled 2026-03-01 contradicts the full-range answer.
        batch = [
            event(flow(quantity=2), time="2026-03-02T12:00:00+01:00"),
            event(flow(quantity=3), time="2026-03-20T12:00:00+01:00"),
        ]
        assert post(client, batch, BATCH).json()["accepted"] == 2
        recompute_dirty_windows(sessions, 100)

        whole = series(
            metrics(client, "2026-03-01", "2026-03-31", "input_kg", interval="month"), "input_kg"
        )
        assert [(p["start"], p["value"]) for p in whole] == [("2026-03-01", 5.0)]

        [clipped] = series(
            metrics(client, "2026-03-15", "2026-03-31", "input_kg", interval="month"), "input_kg"
        )
        assert (clipped["start"], clipped["value"]) in {("2026-03-01", 5.0), ("2026-03-15", 3.0)}


class TestMetricQueryRefusals:
    """A metrics query the API cannot answer: a problem, never a guess."""

    def test_an_unknown_metric_name_is_a_422_problem(self, client: TestClient) -> None:
        response = client.get(METRICS_URL, params={"names": "input_kg,happiness"})
        body = assert_problem(response, 422)
        assert "happiness" in body["detail"]
        assert "input_kg" in body["detail"]  # the known names are listed

    def test_from_after_to_is_a_422_problem(self, client: TestClient) -> None:
        response = client.get(METRICS_URL, params={"from": "2026-03-11", "to": "2026-03-10"})
        body = assert_problem(response, 422)
        assert "2026-03-11" in body["detail"] and "2026-03-10" in body["detail"]

    @pytest.mark.parametrize(
        "params",
        [{"interval": "minute"}, {"group_by": "colour"}, {"from": "10/03/2026"}],
    )
    def test_bad_query_parameters_are_422_problems(
        self, client: TestClient, params: dict[str, str]
    ) -> None:
        assert_problem(client.get(METRICS_URL, params=params), 422)

    def test_too_many_windows_are_refused(self, client: TestClient) -> None:
        response = client.get(METRICS_URL, params={"from": "2020-01-01", "to": "2026-01-01"})
        body = assert_problem(response, 422)
        assert "interval" in body["detail"]

    def test_metrics_of_an_unknown_city_is_a_404_problem(self, client: TestClient) -> None:
        assert_problem(client.get("/v1/cities/atlantis/metrics"), 404)


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
        assert created.json() == BARCELONA
        assert client.get("/v1/cities/barcelona").json() == BARCELONA
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
        assert created.json() == {**site, "city": "barcelona"}
        sites = client.get("/v1/cities/barcelona/sites").json()["items"]
        assert sites == [{**site, "city": "barcelona"}]

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


class TestOperations:
    """Health, readiness, the OpenAPI document, unknown paths, and the roles' routes."""

    def test_health_and_readiness(self, client: TestClient) -> None:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}

    def test_openapi_lists_the_ingest_and_query_paths(self, client: TestClient) -> None:
        spec = client.get("/openapi.json").json()
        assert "post" in spec["paths"]["/v1/events"]
        content = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]
        assert {SINGLE, BATCH} <= content.keys()
        assert "/v1/cities/{city}/metrics" in spec["paths"]

    def test_an_unknown_path_is_a_404_problem(self, client: TestClient) -> None:
        assert_problem(client.get("/v1/nothing-here"), 404)

    def test_roles_split_the_routes(self, sqlite_url: str, sessions: Sessions) -> None:
        settings = settings_for(sqlite_url)
        ingest = TestClient(
            create_app(settings, "ingest", factory=sessions, dispatcher=NoDispatch())
        )
        query = TestClient(create_app(settings, "query", factory=sessions, dispatcher=NoDispatch()))

        assert post(ingest, event(flow())).status_code == 202
        assert ingest.get(METRICS_URL).status_code == 404
        assert post(query, event(flow())).status_code in (404, 405)
        assert query.get(METRICS_URL).status_code == 200
