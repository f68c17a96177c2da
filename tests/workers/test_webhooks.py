"""Webhook delivery against a real HTTP receiver that fails and then recovers.

The receiver is a plain `http.server` on a free port; deliveries go through httpx as in
production. Events must arrive once each and in order, and the delivery log must show the
failure and the retry.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.formats.json import JSONFormat
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity import webhooks
from fabcity.core.db import transaction
from fabcity.core.models import Delivery, Event, Subscription
from fabcity.core.settings import Settings
from fabcity.ingest.service import ingest
from schemas import standards
from schemas.standards import METRICS_UPDATED, SubscriptionIn
from tests.conftest import settings_for
from tests.support.city import CITY, DEVICE, SITE, event, flow, register
from workers.jobs import recompute_dirty_windows
from workers.webhooks import deliver_due


@dataclass
class Receiver:
    """Answers 500 to the first `fail_first` requests, then 204; keeps every request."""

    fail_first: int = 0
    requests: list[tuple[int, str, Any]] = field(default_factory=list)
    url: str = ""

    @property
    def accepted(self) -> list[Any]:
        """The CloudEvents it accepted, flattened from batches, in arrival order."""
        out: list[Any] = []
        for status, _, body in self.requests:
            if status < 300:
                out.extend(body if isinstance(body, list) else [body])
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with lock:
                status = 500 if len(state.requests) < state.fail_first else 204
                state.requests.append((status, self.headers["content-type"], body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    with _serving(Handler) as url:
        state.url = url
        yield state


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A receiver on a spare loopback port, in a thread: its hook URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def _settings(db_url: str, backoff_s: float = 0.3) -> Settings:
    # No settling delay: the test's events are committed before delivery starts.
    return settings_for(db_url, webhook_backoff_s=backoff_s, webhook_settle_s=0)


def _subscribe(factory: sessionmaker[Session], **body: Any) -> int:
    with transaction(factory) as s:
        return webhooks.create(s, SubscriptionIn.model_validate(body)).id


def _deliver_until(
    factory: sessionmaker[Session], settings: Settings, done: Any, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "deliveries did not complete in time"
        deliver_due(factory, settings)
        time.sleep(0.05)


def _log(factory: sessionmaker[Session], sub_id: int) -> list[tuple[Any, ...]]:
    with transaction(factory) as s:
        rows = s.scalars(
            select(Delivery).where(Delivery.subscription_id == sub_id).order_by(Delivery.id)
        )
        return [(d.ok, d.status_code, d.attempt, d.count, d.first_id, d.last_id) for d in rows]


def test_structured_delivery_survives_a_failing_receiver(
    factory: sessionmaker[Session], db_url: str, receiver: Receiver
) -> None:
    register(factory)
    settings = _settings(db_url)
    sub_id = _subscribe(factory, url=receiver.url, city=CITY, types=["fabcity.flow"])
    sent = [event(flow(quantity=q), id=f"e-{q}") for q in (1, 2, 3)]
    status = event(
        {"online": True}, type="fabcity.device.status", source=f"/{CITY}/{SITE}/{DEVICE}"
    )
    with transaction(factory) as s:
        ingest(s, [sent[0], status, sent[1], sent[2]])
        pks = list(
            s.scalars(select(Event.id).where(Event.type == "fabcity.flow").order_by(Event.id))
        )

    receiver.fail_first = 1
    deliver_due(factory, settings)
    assert [r[0] for r in receiver.requests] == [500]
    # Backing off: an immediate sweep sends nothing.
    assert deliver_due(factory, settings) == 0
    assert len(receiver.requests) == 1

    _deliver_until(factory, settings, lambda: len(receiver.accepted) == 3)
    assert [e["id"] for e in receiver.accepted] == ["e-1", "e-2", "e-3"]
    assert receiver.accepted[0]["data"] == flow(quantity=1)
    assert {ct for _, ct, _ in receiver.requests} == {"application/cloudevents+json"}
    assert _log(factory, sub_id) == [
        (False, 500, 1, 1, pks[0], pks[0]),
        (True, 204, 2, 3, pks[0], pks[2]),
    ]
    with transaction(factory) as s:
        sub = s.get_one(Subscription, sub_id)
        assert (sub.failures, sub.next_attempt_at, sub.event_cursor) == (0, None, pks[2])

    # Nothing is sent twice; a new event is sent alone.
    assert deliver_due(factory, settings) == 0
    with transaction(factory) as s:
        ingest(s, [event(flow(quantity=4), id="e-4")])
    _deliver_until(factory, settings, lambda: len(receiver.accepted) == 4)
    assert [e["id"] for e in receiver.accepted] == ["e-1", "e-2", "e-3", "e-4"]


def test_batches_in_order_after_repeated_failures(
    factory: sessionmaker[Session], db_url: str, receiver: Receiver
) -> None:
    register(factory)
    settings = _settings(db_url, backoff_s=0.05)
    with transaction(factory) as s:
        ingest(s, [event(flow(), id="before")])
    sub_id = _subscribe(factory, url=receiver.url, mode="batch", batch_size=2)
    with transaction(factory) as s:
        ingest(s, [event(flow(quantity=q), id=f"b-{q}") for q in range(5)])

    receiver.fail_first = 2
    _deliver_until(factory, settings, lambda: len(receiver.accepted) == 5)
    # The event stored before the subscription is not sent; the rest once each, in order.
    assert [e["id"] for e in receiver.accepted] == [f"b-{q}" for q in range(5)]
    assert [(status, len(body)) for status, _, body in receiver.requests] == [
        (500, 2),
        (500, 2),
        (204, 2),
        (204, 2),
        (204, 1),
    ]
    assert {ct for _, ct, _ in receiver.requests} == {"application/cloudevents-batch+json"}
    log = _log(factory, sub_id)
    assert [(ok, status, attempt, count) for ok, status, attempt, count, _, _ in log] == [
        (False, 500, 1, 2),
        (False, 500, 2, 2),
        (True, 204, 3, 2),
        (True, 204, 1, 2),
        (True, 204, 1, 1),
    ]


def test_metric_updates_are_announced_to_their_subscribers(
    factory: sessionmaker[Session], db_url: str, receiver: Receiver
) -> None:
    register(factory)
    settings = _settings(db_url)
    _subscribe(factory, url=receiver.url, types=[METRICS_UPDATED])
    with transaction(factory) as s:
        ingest(s, [event(flow()), event(flow(), time="2026-03-11T10:00:00+01:00")])
    recompute_dirty_windows(factory, 100)

    _deliver_until(factory, settings, lambda: len(receiver.accepted) == 1)
    notice = receiver.accepted[0]
    assert notice["type"] == METRICS_UPDATED
    assert notice["source"] == f"/fabcity/metrics/{CITY}"
    assert notice["data"] == {"city": CITY, "days": ["2026-03-10", "2026-03-11"]}
    # Only the notice: the subscription did not ask for the events themselves.
    time.sleep(0.1)
    deliver_due(factory, settings)
    assert len(receiver.requests) == 1


def test_no_subscriber_no_notice(factory: sessionmaker[Session]) -> None:
    register(factory)
    with transaction(factory) as s:
        ingest(s, [event(flow())])
    recompute_dirty_windows(factory, 100)
    with transaction(factory) as s:
        assert webhooks.prune_notices(s) == 0


# What a receiver built on the CloudEvents SDK sees ---------------------------------------------


@dataclass
class SdkReceiver:
    """Parses every delivery with the SDK, as a receiver would: `from_http` for one event
    (structured or binary), the JSON format's reader for each event of a batch. Answers 400
    to what the SDK refuses and to any request that carries an id of `refuse`, else 204."""

    refuse: set[str] = field(default_factory=set)
    url: str = ""
    events: list[Any] = field(default_factory=list)  # the SDK's events it accepted, in order
    answers: list[tuple[int, str, list[str]]] = field(default_factory=list)  # status, type, ids

    @property
    def ids(self) -> list[str]:
        return [e.get_id() for e in self.events]


@pytest.fixture
def sdk_receiver() -> Iterator[SdkReceiver]:
    state = SdkReceiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            content_type = headers.get("content-type", "")
            try:
                if content_type == "application/cloudevents-batch+json":
                    parsed = [JSONFormat().read(None, json.dumps(e)) for e in json.loads(body)]
                else:
                    parsed = [from_http_event(HTTPMessage(headers, body))]
                ids = [e.get_id() for e in parsed]
                status = 400 if state.refuse & set(ids) else 204
            except Exception:  # the SDK refused it, as a receiver's framework would
                parsed, ids, status = [], [], 400
            with lock:
                state.answers.append((status, content_type, ids))
                if status < 300:
                    state.events.extend(parsed)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    with _serving(Handler) as url:
        state.url = url
        yield state


def _sdk_world(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Events as SDK senders write them: an extension, a charset, bytes data."""
    register(factory)
    meter = event({}, id="m", type="fabcity.meter.reading", source=f"/{CITY}/{SITE}/{DEVICE}")
    del meter["data"]
    meter["data_base64"] = base64.b64encode(b'{"energy_kwh_total": 3.5}').decode()
    plain = event(flow(quantity=1), id="plain")
    traced = event(flow(quantity=2), id="traced") | {"traceparent": "00-ab-cd-01"}
    charset = event(flow(quantity=3), id="charset") | {
        "datacontenttype": "application/json; charset=utf-8",
        "subject": 'spool 7 % "quoted" é',
    }
    return [plain, traced, charset, meter]


@pytest.mark.parametrize("mode", ["structured", "batch", "binary"])
def test_every_mode_is_read_by_the_sdk(
    factory: sessionmaker[Session], db_url: str, sdk_receiver: SdkReceiver, mode: str
) -> None:
    events = _sdk_world(factory)
    sub_id = _subscribe(
        factory, url=sdk_receiver.url, mode=mode, types=["fabcity.flow", "fabcity.meter.reading"]
    )
    with transaction(factory) as s:
        assert ingest(s, events).result.accepted == 4
        order = list(s.scalars(select(Event.event_id).order_by(Event.id)))

    _deliver_until(factory, _settings(db_url), lambda: len(sdk_receiver.events) == 4)

    assert all(status == 204 for status, _, _ in sdk_receiver.answers)
    assert sdk_receiver.ids == order
    by_id = {e.get_id(): e for e in sdk_receiver.events}
    assert by_id["plain"].get_data() == flow(quantity=1)
    assert by_id["plain"].get_source() == f"/{CITY}/{SITE}"
    assert by_id["plain"].get_time() == datetime.fromisoformat("2026-03-10T10:00:00+01:00")
    assert by_id["traced"].get_extension("traceparent") == "00-ab-cd-01"
    assert by_id["charset"].get_data() == flow(quantity=3)
    assert by_id["charset"].get_subject() == 'spool 7 % "quoted" é'
    assert by_id["m"].get_data() == {"energy_kwh_total": 3.5}
    expected = {
        "structured": {"application/cloudevents+json"},
        "batch": {"application/cloudevents-batch+json"},
        "binary": {"application/json", "application/json; charset=utf-8"},
    }[mode]
    assert {content_type for _, content_type, _ in sdk_receiver.answers} == expected
    with transaction(factory) as s:
        assert s.get_one(Subscription, sub_id).failures == 0


@pytest.mark.parametrize("mode", ["structured", "batch", "binary"])
def test_a_refused_event_is_parked_and_the_rest_delivered(
    factory: sessionmaker[Session], db_url: str, sdk_receiver: SdkReceiver, mode: str
) -> None:
    register(factory)
    settings = _settings(db_url, backoff_s=0.01)
    sub_id = _subscribe(factory, url=sdk_receiver.url, mode=mode, batch_size=10)
    names = [f"e-{n}" for n in range(1, 6)]  # stored, and sent, in this order
    with transaction(factory) as s:
        ingest(s, [event(flow(), id=n) for n in names])
        pk = dict(s.execute(select(Event.event_id, Event.id)).tuples().all())
    sdk_receiver.refuse = {"e-3"}

    _deliver_until(factory, settings, lambda: len(sdk_receiver.events) == 4)

    # Everything but the refused event, once each and in order; the subscription is healthy.
    assert sdk_receiver.ids == ["e-1", "e-2", "e-4", "e-5"]
    refusals = [ids for status, _, ids in sdk_receiver.answers if status == 400]
    assert refusals[-webhooks.PARK_AFTER :] == [["e-3"]] * webhooks.PARK_AFTER
    with transaction(factory) as s:
        sub = s.get_one(Subscription, sub_id)
        assert (sub.failures, sub.next_attempt_at, sub.event_cursor) == (0, None, pk["e-5"])
        log = [standards.Delivery.model_validate(d) for d in webhooks.deliveries(s, sub_id)]
    parked = [d for d in log if d.parked]
    assert [(d.first_id, d.last_id, d.ok, d.status_code) for d in parked] == [
        (pk["e-3"], pk["e-3"], False, 400)
    ]
    assert parked[0].error is not None and "HTTP 400" in parked[0].error
    # Bounded: a refused batch at most, the refusals of the event, and what was delivered.
    assert len([d for d in log if not d.ok]) <= 1 + webhooks.PARK_AFTER

    # Nothing more is owed: the next sweep sends nothing, the parked event included.
    answers = len(sdk_receiver.answers)
    time.sleep(0.05)
    assert deliver_due(factory, settings) == 0
    assert len(sdk_receiver.answers) == answers


def test_a_receiver_that_is_down_is_never_parked(
    factory: sessionmaker[Session], db_url: str, receiver: Receiver
) -> None:
    register(factory)
    settings = _settings(db_url, backoff_s=0.01)
    sub_id = _subscribe(factory, url=receiver.url)
    with transaction(factory) as s:
        ingest(s, [event(flow(), id="e")])
    receiver.fail_first = webhooks.PARK_AFTER + 2  # 500s: "not now", not "never"

    _deliver_until(factory, settings, lambda: len(receiver.accepted) == 1)

    assert [e["id"] for e in receiver.accepted] == ["e"]
    with transaction(factory) as s:
        log = [standards.Delivery.model_validate(d) for d in webhooks.deliveries(s, sub_id)]
    assert not any(d.parked for d in log)


def test_a_metrics_notice_comes_after_the_events_it_reports(
    factory: sessionmaker[Session], db_url: str, sdk_receiver: SdkReceiver
) -> None:
    register(factory)
    _subscribe(factory, url=sdk_receiver.url, types=["fabcity.flow", METRICS_UPDATED])
    with transaction(factory) as s:
        ingest(s, [event(flow(), id="f-1"), event(flow(), id="f-2")])
    recompute_dirty_windows(factory, 100)

    # While the events settle (PostgreSQL waits for stragglers), the notice waits as well;
    # SQLite commits ids in order, so there is nothing to settle and all three go at once.
    settling = settings_for(db_url, webhook_backoff_s=0.01, webhook_settle_s=3600)
    deliver_due(factory, settling)
    everything = ["f-1", "f-2", "notice-1"]
    assert sdk_receiver.ids == ([] if db_url.startswith("postgresql") else everything)

    _deliver_until(factory, _settings(db_url), lambda: len(sdk_receiver.events) == 3)
    assert sdk_receiver.ids == everything
    notice = sdk_receiver.events[2]
    assert notice.get_type() == METRICS_UPDATED
    # What orders it stays inside the platform.
    assert notice.get_data() == {"city": CITY, "days": ["2026-03-10"]}
