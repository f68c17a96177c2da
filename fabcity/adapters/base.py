"""What every adapter shares: the message, the device it came from, what comes out, and the
quirks of time, numbers and counters that several sources have in common.

An adapter is a pure function `decode(message, device, state) -> Decoded`: no I/O, no clock.
`state` is what the adapter remembered of this device after its previous message (JSON
values only, never mutated); `Decoded.state` is what it remembers now. The caller stores the
new state in the same transaction as the events, so a redelivered message meets the state its
first delivery left and the events it yields are duplicates or nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel

from schemas.events import EventType

State = dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One device message: an MQTT publish, or the answer to an HTTP poll."""

    topic: str
    payload: bytes
    received_at: datetime
    # MQTT 5 user properties (CloudEvents binary mode), and the PUBLISH content type.
    properties: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    # The broker's DUP flag: sent before and not acknowledged, so perhaps already taken in.
    redelivered: bool = False


@dataclass(frozen=True)
class Device:
    """The registered device a message belongs to."""

    id: int
    source: str  # `/{city}/{site}/{device}`: the source of every event it yields
    adapter: str
    settings: BaseModel  # the adapter's settings model, validated
    timezone: ZoneInfo  # the city's: Tasmota sends local time without an offset


@dataclass(frozen=True)
class Emitted:
    """An event without its envelope. The router adds source and id.

    `key` tells apart the events of one message and, for events a state change yields
    (a job's end, a status change), names the change, so the id stays deterministic.
    """

    type: EventType
    data: Any
    time: datetime
    key: str = ""
    id: str | None = None  # an id the device gave (CloudEvents); otherwise derived
    extensions: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Decoded:
    events: list[Emitted]
    state: State
    # Availability the message states (a will, a birth, a death); None when it says nothing.
    online: bool | None = None
    # Why a message meant for this device could not be used (it is then dead-lettered).
    error: str | None = None


class Adapter(Protocol):
    def __call__(self, message: Message, device: Device, state: Mapping[str, Any]) -> Decoded: ...


class Refused(ValueError):
    """A message the adapter cannot read: dead-lettered with this reason."""


def under(message: Message, prefix: str) -> str:
    """The rest of the message's topic below `prefix/`; refused when it lies elsewhere."""
    head = prefix + "/"
    if not message.topic.startswith(head):
        raise Refused(f"topic {message.topic!r} is not under {head!r}")
    return message.topic[len(head) :]


def json_body(message: Message) -> Any:
    try:
        return orjson.loads(message.payload)
    except orjson.JSONDecodeError as exc:
        raise Refused(f"payload is not JSON: {exc}") from exc


def json_object(message: Message) -> dict[str, Any]:
    body = json_body(message)
    if not isinstance(body, dict):
        raise Refused("payload is not a JSON object")
    return body


# Numbers -----------------------------------------------------------------------------------


def number(value: object) -> float | None:
    """A finite number from a JSON number or a numeric string (Bambu sends many as strings)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# Time --------------------------------------------------------------------------------------

# Unix times above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 1e11


def unix_time(value: object) -> datetime | None:
    """Unix seconds or milliseconds (told apart by size) as an aware UTC datetime."""
    seconds = number(value)
    if seconds is None or seconds <= 0:
        return None
    if seconds > _MS_THRESHOLD:
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def local_time(value: object, zone: ZoneInfo) -> datetime | None:
    """An ISO time; without an offset it is read in `zone` (Tasmota's device local time)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


# Availability ------------------------------------------------------------------------------


def availability(state: Mapping[str, Any], online: bool, message: Message) -> Decoded:
    """A will/birth/status message: a `fabcity.device.status` event when availability changes.

    Retained status messages come again on every (re)subscription and a broker redelivers
    unacknowledged ones, so an event is emitted only on a change, keyed by how many changes
    there were: online, offline, online again are three events; a repeat is none.
    """
    new = dict(state)
    if state.get("online") is online:
        return Decoded([], new, online)
    changes = int(state.get("status_changes", 0)) + 1
    new.update(online=online, status_changes=changes)
    event = Emitted(
        EventType.device_status, {"online": online}, message.received_at, key=f"status-{changes}"
    )
    return Decoded([event], new, online)


# Energy counters ---------------------------------------------------------------------------


def meter_delta(
    state: Mapping[str, Any],
    total_kwh: float,
    when: datetime,
    name: str = "meter",
    order: datetime | None = None,
) -> tuple[Emitted | None, State]:
    """A cumulative energy counter as a `fabcity.meter.reading` delta.

    The counter is remembered per device. A counter below the remembered one was reset
    (device reset, `EnergyReset`, `Switch.ResetCounters`): the energy since the reset is the
    new total, never a negative delta. The first reading only sets the baseline, since what
    the counter held before the device was registered is not the city's to count. A reading
    older than the remembered one (a replayed dead letter) is skipped: it is not a reset.

    `order` is the time readings are ordered by, when it is not `when`: a device whose
    messages carry its clock on some topics and nothing on others (Shelly) is ordered by
    receipt, one clock, since a late delivery puts the device's clock behind the receipt
    of the message before.
    """
    new = dict(state)
    previous = state.get(name)
    stamp = (order or when).timestamp()
    new[name] = {"total": total_kwh, "at": stamp}
    if not isinstance(previous, dict):
        return None, new
    if stamp < float(previous.get("at", 0)):
        new[name] = previous
        return None, new
    last = float(previous.get("total", 0.0))
    delta = total_kwh - last if total_kwh >= last else total_kwh
    if delta <= 0:
        return None, new
    event = Emitted(
        EventType.meter_reading,
        {"energy_kwh": round(delta, 9)},
        when,
        key=f"{name}-{total_kwh!r}-{stamp!r}",
    )
    return event, new


# Scales ------------------------------------------------------------------------------------

# Below this a scale is taken as empty: taring and load-cell drift are not weighings.
EMPTY_SCALE_KG = 0.005


# In `remaining` mode, a change smaller than this is load-cell drift, not material used: the
# level stays where it was, so a slow use still counts once it adds up to more than this.
SCALE_DRIFT_KG = 0.002


def scale_reading(
    state: Mapping[str, Any],
    weight_kg: float,
    when: datetime,
    material: str | None,
    direction: str,
    mode: str,
) -> tuple[Emitted | None, State]:
    """A scale's weight as a `fabcity.scale.reading`, read as its `scale` setting says."""
    if mode == "remaining":
        return scale_level(state, weight_kg, when, material, direction)
    return scale_change(state, weight_kg, when, material, direction)


def scale_level(
    state: Mapping[str, Any],
    level_kg: float,
    when: datetime,
    material: str | None,
    direction: str,
) -> tuple[Emitted | None, State]:
    """A scale under a spool or a bin: its weight is what is left, so what was used is the
    decrease since the remembered level.

    An increase is a refill (a new spool, a topped-up bin): like a meter reset, it moves the
    level up and counts nothing, never a negative. The first reading only sets the level. A
    reading older than the remembered one (a replayed dead letter) is skipped. An empty
    scale is a spool or a bin lifted off, not used up: the level is kept for when it returns.
    """
    new = dict(state)
    previous = state.get("level")
    stamp = when.timestamp()
    if isinstance(previous, dict) and stamp < float(previous.get("at", 0)):
        return None, new
    if level_kg < EMPTY_SCALE_KG:
        return None, new
    last = number(previous.get("kg")) if isinstance(previous, dict) else None
    if last is not None and abs(level_kg - last) < SCALE_DRIFT_KG:
        # Kept at the old level (and time): drift is ignored, and use adds up until it shows.
        return None, new
    new["level"] = {"kg": level_kg, "at": stamp}
    if last is None or level_kg > last:
        return None, new
    used = round(last - level_kg, 9)
    count = int(state.get("uses", 0)) + 1
    new["uses"] = count
    data: dict[str, Any] = {"net_kg": used, "direction": direction}
    if material:
        data["material"] = material
    return Emitted(EventType.scale_reading, data, when, key=f"used-{count}"), new


def scale_change(
    state: Mapping[str, Any],
    net_kg: float,
    when: datetime,
    material: str | None,
    direction: str,
) -> tuple[Emitted | None, State]:
    """A weight as a `fabcity.scale.reading` when it settles on a new, non-empty value.

    Scales publish their weight periodically and on change; one item weighed is one reading,
    so a repeat of the same weight is not a new reading, and an empty scale is none.
    """
    new = dict(state)
    last = number(state.get("weight_kg"))
    new["weight_kg"] = net_kg
    if net_kg < EMPTY_SCALE_KG or (last is not None and abs(net_kg - last) < 1e-9):
        return None, new
    count = int(state.get("weighings", 0)) + 1
    new["weighings"] = count
    data: dict[str, Any] = {"net_kg": net_kg, "direction": direction}
    if material:
        data["material"] = material
    return Emitted(EventType.scale_reading, data, when, key=f"weighing-{count}"), new


# Jobs --------------------------------------------------------------------------------------


def job_event(
    status: str,
    started: datetime,
    ended: datetime,
    key: str,
    settings: BaseModel,
    length_mm: float | None = None,
    mass_kg: float | None = None,
    material: str | None = None,
    energy_kwh: float | None = None,
    modelled: Sequence[str] = (),
) -> Emitted:
    """A `fabcity.machine.job` that ended.

    Only what the source reports: a mass from a length and the loaded filament is modelled
    by the flows derivation, which labels it so. `modelled` names the figures that are
    estimates (a slicer's filament weight, a start taken from a receive time), so that the
    flows made from them are labelled `modelled`, not `measured`.
    """
    started = min(started, ended)  # clocks disagree by a little: never end before the start
    data: dict[str, Any] = {"status": status, "started": iso(started), "ended": iso(ended)}
    material = material or getattr(settings, "material", None)
    if material:
        data["material"] = material[:100]
    if length_mm is not None and length_mm > 0:
        data["length_mm"] = round(length_mm, 3)
    if mass_kg is not None and mass_kg > 0:
        data["mass_kg"] = round(mass_kg, 6)
    if energy_kwh is not None and energy_kwh > 0:
        data["energy_kwh"] = round(energy_kwh, 6)
    estimates = sorted({f for f in modelled if f in data})  # only figures the job states
    if estimates:
        data["modelled"] = estimates
    return Emitted(EventType.machine_job, data, ended, key=key)
