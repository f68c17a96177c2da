"""Sending webhook deliveries over HTTP: what `fabcity.webhooks` decides, posted with httpx.

No database transaction stays open while a request is in flight: runs are read in one short
transaction, posted, and recorded in another, so a slow receiver never holds up ingest.
"""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from fabcity import webhooks
from fabcity.core.db import transaction
from fabcity.core.settings import Settings

log = logging.getLogger(__name__)

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
# Header values in binary mode are percent-encoded, all but printable ASCII other than space,
# `"` and `%` (the CloudEvents HTTP binding, 3.1.3.2).
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
# How many runs one subscription may send per sweep before the others get their turn.
RUNS_PER_SWEEP = 20

DELIVERED = Counter("fabcity_webhook_events_total", "CloudEvents sent to webhooks", ["outcome"])


def lease_s(settings: Settings) -> float:
    # A run is one batch request, or up to a batch of structured requests stopped at half
    # the lease; the rest is room for the recording transaction.
    return settings.webhook_timeout_s * 2 + 30


def deliver_due(
    factory: sessionmaker[Session], settings: Settings, client: httpx.Client | None = None
) -> int:
    """Deliver what every due subscription is owed; returns how many CloudEvents arrived."""
    with transaction(factory) as session:
        webhooks.prune_notices(session)
        claimed = webhooks.claim_due(session, datetime.now(UTC), lease_s(settings))
    if not claimed:
        return 0
    own = client is None
    http = client or httpx.Client(timeout=settings.webhook_timeout_s)
    total = 0
    try:
        for subscription_id in claimed:
            try:
                total += _deliver(factory, settings, http, subscription_id)
            except Exception:
                # One receiver's trouble must not stop the others; the lease runs out and the
                # next sweep tries again.
                log.exception("webhook delivery failed", extra={"subscription": subscription_id})
    finally:
        if own:
            http.close()
    return total


def _deliver(
    factory: sessionmaker[Session], settings: Settings, http: httpx.Client, subscription_id: int
) -> int:
    sent = 0
    for _ in range(RUNS_PER_SWEEP):
        with transaction(factory) as session:
            out = webhooks.pending(
                session, subscription_id, datetime.now(UTC), settings.webhook_settle_s
            )
            if out is None:
                webhooks.release(session, subscription_id)
                return sent
        attempt = post(http, out, deadline_s=lease_s(settings) / 2)
        DELIVERED.labels("delivered").inc(attempt.sent)
        if not attempt.ok:
            DELIVERED.labels("failed").inc(len(out.ids) - attempt.sent)
            log.warning(
                "webhook refused delivery",
                extra={
                    "subscription": subscription_id,
                    "status": attempt.status_code,
                    "error": attempt.error,
                },
            )
        with transaction(factory) as session:
            webhooks.record(
                session,
                out,
                attempt,
                datetime.now(UTC),
                settings.webhook_backoff_s,
                settings.webhook_backoff_max_s,
                lease_s(settings),
            )
        sent += attempt.sent
        if not attempt.ok:
            return sent
    with transaction(factory) as session:
        webhooks.release(session, subscription_id)
    return sent


def post(http: httpx.Client, out: webhooks.Outgoing, deadline_s: float) -> webhooks.Attempt:
    """POST a run in the subscription's mode; structured and binary mode (one event per
    request) stop at the first failure."""
    started = time.perf_counter()
    status: int | None = None
    if out.mode == "batch":
        status, error = _post(http, out.url, orjson.dumps(out.events), {"content-type": BATCH})
        ok = error is None
        return webhooks.Attempt(len(out.events) if ok else 0, ok, status, error, _ms(started))
    sent = 0
    for event in out.events:
        if out.mode == "binary":
            headers, body = binary(event)
            status, error = _post(http, out.url, body, headers)
        else:
            status, error = _post(http, out.url, orjson.dumps(event), {"content-type": SINGLE})
        if error is not None:
            return webhooks.Attempt(sent, False, status, error, _ms(started))
        sent += 1
        if time.perf_counter() - started > deadline_s:
            break
    return webhooks.Attempt(sent, True, status, None, _ms(started))


def binary(event: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """A structured event in HTTP binary mode: its attributes as `ce-*` headers, its
    `datacontenttype` the Content-Type, its data the body."""
    headers = {"content-type": str(event.get("datacontenttype") or JSON)}
    for name, value in event.items():
        if name in ("data", "data_base64", "datacontenttype") or value is None:
            continue
        # Attribute values are strings, numbers or booleans; JSON writes the last two as
        # CloudEvents' canonical string forms do (`true`, `12`).
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        headers[f"ce-{name}"] = quote(text, safe=_HEADER_SAFE)
    if "data_base64" in event:
        body = base64.b64decode(event["data_base64"])
    elif event.get("data") is None:
        body = b""
    else:
        body = orjson.dumps(event["data"])
    return headers, body


def _post(
    http: httpx.Client, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int | None, str | None]:
    """The status code, and what went wrong (None for a 2xx)."""
    try:
        response = http.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{exc.__class__.__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}: {response.text[:300]}"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
