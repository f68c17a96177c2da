"""Building devices and messages for adapter tests, and running a message sequence."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from fabcity.adapters.base import Decoded, Device, Message, State
from fabcity.adapters.routing import ADAPTERS
from schemas.devices import validate_settings

T0 = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)


def device(adapter: str, timezone: str = "Europe/Madrid", **settings: Any) -> Device:
    return Device(
        id=1,
        source=f"/testville/lab/{adapter}",
        adapter=adapter,
        settings=validate_settings(adapter, settings),
        timezone=ZoneInfo(timezone),
    )


def message(
    topic: str,
    payload: Any,
    at: datetime | float = T0,
    properties: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> Message:
    if isinstance(payload, bytes):
        raw = payload
    elif isinstance(payload, str):
        raw = payload.encode()
    else:
        raw = orjson.dumps(payload)
    when = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    return Message(topic, raw, when, dict(properties or {}), content_type)


def run(dev: Device, messages: list[Message], state: State | None = None) -> list[Decoded]:
    """Feed messages in order, each with the state the previous one left."""
    out = []
    current: State = dict(state or {})
    for m in messages:
        decoded = ADAPTERS[dev.adapter].decode(m, dev, current)
        current = decoded.state
        out.append(decoded)
    return out


def events(decoded: list[Decoded]) -> list[Any]:
    return [e for d in decoded for e in d.events]
