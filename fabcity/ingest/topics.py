"""The native topic grammar: `{prefix}/{city}/{site}/{device}/events` and what it carries.

The bridge reads live messages with it and dead-letter replay reads stored ones, so both
turn the same bytes into the same event.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from schemas.fast import Preread, read_fast_json

MAX_PAYLOAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class Parsed:
    """A message turned into an event (an object, or read already), or the reason it could not
    be."""

    event: dict[str, Any] | Preread | None
    reason: str | None


# Asked of every message, and a city's devices are few: remembered. Bounded, so that a flood
# of made-up topics costs only misses.
@functools.lru_cache(maxsize=4096)
def source_of(topic: str, prefix: str) -> str | None:
    """`{prefix}/{city}/{site}/{device}/events` to `/{city}/{site}/{device}`."""
    if not is_native(topic, prefix):
        return None
    parts = topic[len(prefix.rstrip("/")) + 1 :].split("/")
    if len(parts) != 4 or parts[3] != "events" or not all(parts[:3]):
        return None
    return "/" + "/".join(parts[:3])


def is_native(topic: str, prefix: str) -> bool:
    """Whether a topic lies under the native prefix (an adapter's topic does not)."""
    return topic.startswith(native_prefix(prefix))


def native_prefix(prefix: str) -> str:
    """What every native topic starts with."""
    return prefix.rstrip("/") + "/"


def to_event(
    topic: str,
    payload: bytes,
    prefix: str,
    received_at: datetime,
    max_payload: int = MAX_PAYLOAD_BYTES,
) -> Parsed:
    """A native-topic message as a CloudEvent object: a full event, or a bare flow `data`.

    A bare payload gets a deterministic id (a hash of its topic and bytes) so that a broker's
    redelivery is a duplicate. Two identical bare payloads are therefore one event: a sender
    that may repeat identical flows must send full events with ids of its own.
    """
    source = source_of(topic, prefix)
    if source is None:
        return Parsed(
            None, f"topic {topic!r} is not '{prefix}/{{city}}/{{site}}/{{device}}/events'"
        )
    if len(payload) > max_payload:
        return Parsed(None, f"payload of {len(payload)} bytes; at most {max_payload}")
    # A plain flow event, what devices and labs send most, is read once, straight from its
    # bytes, and stored as it came (as the HTTP API does): a dict in between, then the
    # reader, then JSON again cost the bridge about 4 us an event. Anything else, and every
    # refusal, takes the path below.
    fast = read_fast_json(payload)
    if fast is not None and fast.source == source:
        try:
            return Parsed(Preread(fast, payload.decode()), None)
        except UnicodeDecodeError:
            pass
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return Parsed(None, f"payload is not JSON: {exc}")
    if isinstance(body, dict) and "specversion" in body:
        if body.get("source") != source:
            return Parsed(
                None,
                f"event source {body.get('source')!r} does not match its topic ({source!r})",
            )
        return Parsed(body, None)
    if not isinstance(body, dict | list):
        return Parsed(None, "payload must be a CloudEvent or a flow object (or a list of flows)")
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()[:32]
    return Parsed(
        {
            "specversion": "1.0",
            "id": f"mqtt-{digest}",
            "source": source,
            "type": "fabcity.flow",
            "time": received_at.isoformat(),
            "data": body,
        },
        None,
    )
