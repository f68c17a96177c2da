"""Device messages into events, inside the caller's transaction.

For each message: find its registered device(s) by topic, run the adapter with the state the
device's previous message left, keep the new state, and build the events' envelopes. The
states, the devices' availability and (through the one ingest path) the events are written
in the same transaction, so a message is either fully taken into account or not at all. A
batch the broker delivers again after its commit (the bridge died before acknowledging it)
meets states that have moved past it: each device remembers its last batch, and `route`
skips what it has already taken in.
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
        bool(getattr(incoming, "dup", False)),
    )


# Where a device's state keeps the digests of its messages in the last batch taken in.
TAKEN = "_taken"


def message_digest(message: Message) -> str:
    """Names a message by its topic and payload (16 hex digits: collisions within one
    device's batch are out of reach)."""
    h = hashlib.sha256(message.topic.encode())
    h.update(b"\0")
    h.update(message.payload)
    return h.hexdigest()[:16]


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
    # A batch is committed, then acknowledged: a bridge that dies in between gets the batch
    # again (flagged DUP) and its messages meet states that have taken them in. A counter
    # would read its older total as a reset, a scale count its weighings again, a job
    # restart. So each device remembers the digests of its messages in the last batch, and
    # a redelivered message among them is skipped. Only a redelivery: the same bytes sent
    # again by the device (a repeated weight) are new. The redelivered batch may come back
    # split across batches: while redeliveries arrive, the digests they may still match are
    # kept too.
    before = {i: list(s.get(TAKEN) or ()) for i, s in states.items()}
    taken: dict[int, list[str]] = {}
    redelivered: set[int] = set()
    for incoming, devices in zip(messages, targets, strict=True):
        if not devices:
            if not not_from_devices(incoming.topic):
                out.dead.append((incoming, no_device(incoming.topic)))
            continue
        message = as_message(incoming)
        name = message_digest(message)
        for device in devices:
            seen[device.id] = max(seen.get(device.id, message.received_at), message.received_at)
            taken.setdefault(device.id, []).append(name)
            if message.redelivered:
                redelivered.add(device.id)
                if name in before.get(device.id, ()):
                    continue
            decoded = _decode(device, message, states.get(device.id, {}))
            if isinstance(decoded, str):
                out.dead.append((incoming, f"{device.source} ({device.adapter}): {decoded}"))
                continue
            if decoded.state != states.get(device.id, {}):
                states[device.id] = decoded.state
                changed.add(device.id)
            if decoded.online is not None:
                online[device.id] = decoded.online
            out.events.extend((incoming, envelope(device, message, e)) for e in decoded.events)
    for device_id, names in taken.items():
        if device_id in redelivered:
            names = list(dict.fromkeys([*before.get(device_id, ()), *names]))
        states[device_id] = {**states.get(device_id, {}), TAKEN: names}
        changed.add(device_id)
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
