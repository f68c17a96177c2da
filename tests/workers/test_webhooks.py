"""Webhook delivery against a real HTTP receiver that fails and then recovers.

The receiver is a plain `http.server` on a free port; deliveries go through httpx as in
production. Events must arrive once each and in order, and the delivery log must show the
failure and the retry.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity import webhooks
from fabcity.core.db import transaction
from fabcity.core.models import Delivery, Event, Subscription
from fabcity.core.settings import Settings
from fabcity.ingest.service import ingest
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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
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
