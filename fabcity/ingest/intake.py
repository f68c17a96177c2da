"""Device messages into events, inside the caller's transaction.

For each message: find its registered device(s) by topic, run the adapter with the state the
device's previous message left, keep the new state, and build the events' envelopes. The
states, the devices' availability and (through the one ingest path) the events are written
in the same transaction, so a message is either fully taken into account or not at all, and
a redelivery meets the state its first delivery left.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fabcity.adapters.base import Decoded, Device, Emitted, Message, Refused, State, iso
from fabcity.adapters.routing import ADAPTERS, Router, not_from_devices
from fabcity.core import models
from fabcity.core.db import is_postgres
from fabcity.ingest.deadletters import Incoming, Keeper, Kept
from fabcity.ingest.service import ingest
from fabcity.registry import entries
from schemas.api import IngestResult

log = logging.getLogger(__name__)


M = TypeVar("M", bound=Incoming)


@dataclass
class Routed(Generic[M]):
    events: list[tuple[M, dict[str, Any]]] = field(default_factory=list)
    dead: list[tuple[M, str]] = field(default_factory=list)


def no_device(topic: str) -> str:
    return (
        f"no registered device for topic {topic!r}; register it (`fabcity devices add`) "
        "and replay (`fabcity deadletters replay`)"
    )


def load_router(session: Session) -> Router:
    return Router(entries.adapter_devices(session))


def as_message(incoming: Incoming) -> Message:
    if isinstance(incoming, Message):
        return incoming
    properties = getattr(incoming, "properties", None) or ()
    return Message(
        incoming.topic,
        incoming.payload,
        incoming.received_at,
        dict(properties),
        getattr(incoming, "content_type", None),
    )


def event_id(device: Device, message: Message, emitted: Emitted) -> str:
    """Derived from the message, so a redelivered message yields the same ids."""
    if emitted.id is not None:
        return emitted.id
    digest = hashlib.sha256()
    for part in (device.source.encode(), message.topic.encode(), message.payload):
        digest.update(part)
        digest.update(b"\0")
    digest.update(emitted.key.encode())
    return f"{device.adapter}-{digest.hexdigest()[:32]}"


def envelope(device: Device, message: Message, emitted: Emitted) -> dict[str, Any]:
    return {
        **emitted.extensions,
        "specversion": "1.0",
        "id": event_id(device, message, emitted),
        "source": device.source,
        "type": emitted.type.value,
        "time": iso(emitted.time),
        "data": emitted.data,
    }


def route(session: Session, messages: Sequence[M], router: Router | None = None) -> Routed[M]:
    """Events from device messages; what cannot be read is returned with its reason."""
    out: Routed[M] = Routed()
    if not messages:
        return out
    router = router or load_router(session)
    targets = [router.devices_for(m.topic) for m in messages]
    wanted = sorted({d.id for ds in targets for d in ds})
    states = _load_states(session, wanted)
    changed: set[int] = set()
    seen: dict[int, datetime] = {}
    online: dict[int, bool] = {}
    for incoming, devices in zip(messages, targets, strict=True):
        if not devices:
            if not not_from_devices(incoming.topic):
                out.dead.append((incoming, no_device(incoming.topic)))
            continue
        message = as_message(incoming)
        for device in devices:
            decoded = _decode(device, message, states.get(device.id, {}))
            seen[device.id] = max(seen.get(device.id, message.received_at), message.received_at)
            if isinstance(decoded, str):
                out.dead.append((incoming, f"{device.source} ({device.adapter}): {decoded}"))
                continue
            if decoded.state != states.get(device.id, {}):
                states[device.id] = decoded.state
                changed.add(device.id)
            if decoded.online is not None:
                online[device.id] = decoded.online
            out.events.extend((incoming, envelope(device, message, e)) for e in decoded.events)
    _save_states(session, {i: states[i] for i in changed})
    _mark_seen(session, seen, online)
    return out


def _decode(device: Device, message: Message, state: State) -> Decoded | str:
    try:
        return ADAPTERS[device.adapter].decode(message, device, state)
    except Refused as exc:
        return str(exc)
    except Exception as exc:
        # A bug or a payload nobody foresaw must not stop the batch: keep the message.
        log.exception("the %s adapter failed on %s", device.adapter, message.topic)
        return f"the adapter failed: {type(exc).__name__}: {exc}"


def _load_states(session: Session, device_ids: list[int]) -> dict[int, State]:
    if not device_ids:
        return {}
    query = (
        select(models.DeviceState.device_id, models.DeviceState.state)
        .where(models.DeviceState.device_id.in_(device_ids))
        .order_by(models.DeviceState.device_id)
    )
    if is_postgres(session):
        # Bridges in one share group may get messages of the same device: the second waits
        # for the first's commit instead of both merging into the same old state.
        query = query.with_for_update()
    return {device_id: dict(state) for device_id, state in session.execute(query)}


def _save_states(session: Session, states: dict[int, State]) -> None:
    if not states:
        return
    now = datetime.now(UTC)
    existing = set(
        session.scalars(
            select(models.DeviceState.device_id).where(
                models.DeviceState.device_id.in_(list(states))
            )
        )
    )
    for device_id, state in states.items():
        if device_id in existing:
            session.execute(
                update(models.DeviceState)
                .where(models.DeviceState.device_id == device_id)
                .values(state=state, updated_at=now)
            )
        else:
            session.add(models.DeviceState(device_id=device_id, state=state, updated_at=now))
    session.flush()


def _mark_seen(session: Session, seen: dict[int, datetime], online: dict[int, bool]) -> None:
    for device_id, when in seen.items():
        session.execute(
            update(models.Device)
            .where(
                models.Device.id == device_id,
                (models.Device.last_seen.is_(None)) | (models.Device.last_seen < when),
            )
            .values(last_seen=when)
        )
    for device_id, value in online.items():
        session.execute(
            update(models.Device).where(models.Device.id == device_id).values(online=value)
        )


@dataclass
class Stored:
    result: IngestResult
    dead: list[tuple[Incoming, str]]
    windows_marked: int
    kept: Kept = field(default_factory=Kept)  # which of `dead` became rows, and why not


def store(
    session: Session,
    messages: Sequence[Incoming],
    channel: str = "mqtt",
    keeper: Keeper | None = None,
) -> Stored:
    """Route, ingest and dead-letter device messages: for sources outside the MQTT bridge
    (the Bambu printer clients, the PrusaLink poller) and for replays. `keeper` says how
    much of what is refused is kept (by default: a bounded prefix, no repeats, no quota)."""
    routed = route(session, messages)
    outcome = ingest(session, [e for _, e in routed.events])
    dead: list[tuple[Incoming, str]] = list(routed.dead)
    dead.extend((routed.events[r.index][0], r.error) for r in outcome.result.rejected)
    kept = (keeper or Keeper()).keep(session, channel, dead)
    return Stored(outcome.result, dead, outcome.windows_marked, kept)
