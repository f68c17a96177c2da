"""`POST /v1/events` end to end on SQLite: one event, batches, duplicates, content types,
malformed bodies, size limits and the local day. Metric values are worked out by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fabcity.core.models import Event, Flow, PendingRollup
from tests.services.http.support import (
    BATCH,
    HUB,
    LAB,
    PRINTER,
    SINGLE,
    MakeClient,
    Sessions,
    assert_problem,
    count,
    metrics,
    post,
    series,
)
from tests.support.city import CITY, event, flow
from workers.jobs import recompute_dirty_windows


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


class TestThreadHops:
    """`POST /v1/events` takes one worker thread, for the endpoint that stores: every
    dependency before it (the body, the state, the caller, the access check) runs on the event
    loop. Each hop to the threadpool is a wait and a wake-up, per request."""

    def test_a_post_hands_to_the_threadpool_once(
        self, client: TestClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import anyio.to_thread

        hops: list[str] = []
        run_sync = anyio.to_thread.run_sync

        async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
            hops.append(getattr(func, "__name__", repr(func)))
            return await run_sync(func, *args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
        response = post(client, event(flow("consume", "filament", 2, "kg", "city"), id="hop"))

        assert response.status_code == 202, response.text
        assert len(hops) == 1, hops
