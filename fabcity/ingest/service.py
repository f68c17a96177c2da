"""The one ingest path, shared by HTTP and MQTT.

validate ▶ resolve the source ▶ derive flows (units converted) ▶ store the event once by
`(source, id)` ▶ store its flows ▶ mark them pending for the rollups. The caller owns the
transaction and acknowledges only after it commits.

Every event of a batch passes through here, so the per-event work is kept lean: plain flow
events are read by `schemas.fast` (msgspec) rather than the pydantic models, flows are
tuples, rows are built once where their values are at hand, and PostgreSQL receives them by
binary COPY. Per-batch work (the registry, the ids, the savepoint) is a few round trips.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import orjson
from pydantic import ValidationError
from sqlalchemy.orm import Session

from fabcity.core import calendar
from fabcity.core.errors import Invalid, one_line
from fabcity.flows import meters
from fabcity.flows.derive import derive
from fabcity.ingest import corrections
from fabcity.ingest.bounds import Bounds, check_batch, check_event, check_time
from fabcity.ingest.origins import Known, OriginResolver, city_of
from fabcity.ingest.store import Ready, slices, store
from fabcity.registry import entries
from fabcity.registry.keys import within
from fabcity.rollups import pending, windows
from schemas.api import IngestResult, Rejected
from schemas.events import DeviceStatusData, EventType, MeterReadingData, decode_data_base64
from schemas.fast import Preread, Read, read, read_fast_json


@dataclass
class IngestOutcome:
    result: IngestResult
    windows_marked: int = 0
    stored_indexes: list[int] = field(default_factory=list)


def prepare(
    items: Sequence[Any],
    session: Session,
    received_at: datetime,
    scope: str | None = None,
    bounds: Bounds | None = None,
    known: Known | None = None,
) -> tuple[list[Ready], list[Rejected]]:
    """Validate and normalise; nothing is written. An item is an event as a dict, or as its
    JSON text (`msgspec.Raw`: the HTTP API hands a batch's events over unparsed), or read
    already (`Preread`: the MQTT bridge reads each message to check it). With a
    `scope` (a source prefix: the credentials' site or device), an event whose source lies
    outside it is refused. Events past the `bounds` (`fabcity.ingest.bounds`; the settings'
    by default) are refused. A long-lived writer passes its `known` sources and resources,
    kept across batches while the registry stands still."""
    bounds = bounds or Bounds.default()
    totals: dict[int, int] = {}
    read_items, rejected = _read_all(items)
    # A source that names no city is refused below, and only costs a lock of its own meanwhile.
    entries.hold_cities(session, {city_of(e.source) for _, e, _ in read_items}, shared=True)
    if known is not None:
        shared, resources = known.current(session)
    else:
        shared, resources = None, entries.resource_infos(session)
    resolver = OriginResolver(session, shared)
    resolver.prime({event.source for _, event, _ in read_items})
    zones: dict[str, ZoneInfo] = {}
    ready: list[Ready] = []
    for index, event, payload in read_items:
        try:
            if scope is not None and not within(event.source, scope):
                raise Invalid(
                    f"source {event.source!r} is outside what this key may write ({scope!r})"
                )
            origin = resolver.resolve(event.source)
            if origin.device_id is None and _counts_energy(event):
                # A counter's flow is the difference from the same meter's reading before
                # (`meters.settle`): a site's reports are no one meter.
                raise Invalid(
                    "a cumulative reading (data.energy_kwh_total) is a meter's: send it from "
                    "the meter's source, /city/site/device; a site's own use is a flow "
                    "(consume electricity) or data.energy_kwh"
                )
            flows = derive(event, resources, origin.device)
            if flows:
                totals[index] = check_event(flows, event.type is EventType.flow, bounds)
            zone = zones.get(origin.timezone) or zones.setdefault(
                origin.timezone, ZoneInfo(origin.timezone)
            )
            when, local = _times(event.time or received_at, zone)
            check_time(event.time or received_at, received_at, bounds)
        except Invalid as exc:
            rejected.append(Rejected(index=index, error=exc.detail))
            continue
        # A real hour: the second pass of an hour the clock repeats is a window of its own.
        day, hour = local.date(), calendar.hour_key(local)
        # The row is made here, where its values are at hand; few events turn out repeats.
        row = (
            event.source, event.id, _TYPE[event.type], when, received_at, origin.city_id,
            origin.site_id, origin.device_id, day, hour, payload,
        )  # fmt: skip
        key = (event.source, event.id)
        ready.append(Ready(index, key, event, origin, when, day, hour, flows, row))
    if totals:
        ready, past = check_batch(session, ready, totals, bounds)
        rejected.extend(past)
    rejected.sort(key=lambda r: r.index)
    return ready, rejected


# Each type's plain string: a dict lookup, where an enum's `.value` runs Python code.
_TYPE: dict[str, str] = {t: t.value for t in EventType}


def _read_all(items: Sequence[Any]) -> tuple[list[tuple[int, Read, str]], list[Rejected]]:
    """Each item read, with its JSON text as it will be stored; or refused, saying why."""
    read_items: list[tuple[int, Read, str]] = []
    rejected: list[Rejected] = []
    for index, raw in enumerate(items):
        try:
            if type(raw) is Preread:
                read_items.append((index, raw.event, _checked(raw.text)))
                continue
            if isinstance(raw, msgspec.Raw):
                text = _checked(_utf8(raw))
                fast = read_fast_json(raw)
                if fast is not None:
                    read_items.append((index, fast, text))
                    continue
                raw = _loads(text)
            else:
                text = ""
            if not isinstance(raw, dict):
                raise Invalid("an event must be a JSON object")
            if "data_base64" in raw:
                # Stored with its `data` decoded, where what reads stored events finds it.
                try:
                    raw, text = decode_data_base64(raw), ""
                except ValueError as exc:
                    raise Invalid(str(exc)) from None
            try:
                event = read(raw)
            except ValidationError as exc:
                raise Invalid(one_line(exc.errors(include_url=False))) from exc
            read_items.append((index, event, text or _payload(raw)))
        except Invalid as exc:
            rejected.append(Rejected(index=index, error=exc.detail))
    return read_items, rejected


def _utf8(raw: msgspec.Raw) -> str:
    try:
        return bytes(raw).decode()
    except UnicodeDecodeError as exc:
        raise Invalid(f"the event is not valid UTF-8: {exc}") from None


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the event is not valid JSON: {exc}") from None


# A NUL character as JSON writes it: `\u0000` after an even number of backslashes (an odd
# number would make it the text "\u0000").
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _payload(raw: dict[str, Any]) -> str:
    """The event as stored: JSON text. A dict made in Python (an adapter's) may hold what JSON
    cannot: an integer past 64 bits, a lone surrogate. No text may hold a NUL character:
    PostgreSQL's text types cannot, and the COPY of the whole batch would fail."""
    try:
        text = orjson.dumps(raw).decode()
    except orjson.JSONEncodeError as exc:
        raise Invalid(f"the event cannot be stored as JSON: {exc}") from None
    return _checked(text)


def _checked(text: str) -> str:
    if "\\u0000" in text and _NUL.search(text):
        raise Invalid("text in the event holds a NUL character (\\u0000), which cannot be stored")
    return text


def _times(at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The time in UTC and in the city's zone; a time that cannot be is refused."""
    try:
        return at.astimezone(UTC), at.astimezone(zone)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is a valid RFC 3339 time, but before year 1 in UTC.
        raise Invalid(f"time: {at.isoformat()} lies outside years 1 to 9999 in UTC") from None


def ingest(
    session: Session,
    items: Sequence[Any],
    received_at: datetime | None = None,
    scope: str | None = None,
    bounds: Bounds | None = None,
    known: Known | None = None,
) -> IngestOutcome:
    """Store the good events of `items` once each; report duplicates and refusals by index.
    `scope`, `bounds`, `known`: see `prepare`."""
    received_at = received_at or datetime.now(UTC)
    ready, rejected = prepare(items, session, received_at, scope, bounds, known)

    # A repeat inside one batch is a duplicate as much as a repeat of a stored event.
    unique: dict[tuple[str, str], Ready] = {}
    for item in ready:
        unique.setdefault(item.key, item)

    stored: list[Ready] = []
    touched: set[windows.Window] = set()
    refused = 0
    if unique:
        # Corrections are stored after the batch's other events, which may hold what they
        # correct (`fabcity.ingest.corrections`).
        claims = [(r, c) for r in unique.values() if (c := corrections.claim_of(r)) is not None]
        fixing = {r.key for r, _ in claims}
        # One order for every writer (the city follows from the source): concurrent batches
        # take the unique index's locks in the same order and wait instead of deadlocking,
        # and a city's rows sit together, so its id ranges are tight.
        items = sorted((r for r in unique.values() if r.key not in fixing), key=_order)
        marks: list[dict[str, Any]] = []
        for part in slices(items) if items else []:
            kept, part_marks = store(session, part, received_at)
            stored.extend(kept)
            marks.extend(part_marks)
        if claims:
            good, past = corrections.check(session, claims)
            rejected = sorted([*rejected, *past], key=lambda r: r.index)
            refused = len(past)
            new: set[tuple[str, str]] = set()
            fixes = sorted((r for r, _, _ in good), key=_order)
            for part in slices(fixes) if fixes else []:
                kept, part_marks = store(session, part, received_at)
                stored.extend(kept)
                marks.extend(part_marks)
                new |= {r.key for r in kept}  # a repeated correction is a duplicate: once
            dirty = corrections.apply(session, [g for g in good if g[0].key in new])
            windows.mark_dirty(session, dirty)
            touched |= dirty
        pending.add(session, marks)
        touched |= {(r.origin.city_id, r.day, r.hour) for r in stored}
        # Only events the models read carry meter readings and statuses (`_data`).
        modelled = [r for r in stored if r.event.event is not None]
        readings = [r.pk for r in modelled if is_counter(r)]
        if readings:
            # A reading changes the flow of the one after it: those hours are recomputed whole.
            dirty = meters.settle(session, readings)
            windows.mark_dirty(session, dirty)
            touched |= dirty
        entries.mark_status(session, _statuses(modelled))

    result = IngestResult(
        accepted=len(stored),
        duplicates=len(ready) - refused - len(stored),
        rejected=rejected,
    )
    return IngestOutcome(result, len(touched), sorted(r.index for r in stored))


def _order(item: Ready) -> tuple[int, str, str]:
    return item.origin.city_id, item.key[0], item.key[1]


def _statuses(stored: list[Ready]) -> dict[int, tuple[datetime, bool]]:
    """The newest `fabcity.device.status` of each device among the stored events."""
    newest: dict[int, tuple[datetime, bool]] = {}
    for r in stored:
        data, device_id = _data(r), r.origin.device_id
        if not isinstance(data, DeviceStatusData) or device_id is None:
            continue
        if device_id not in newest or newest[device_id][0] < r.time:
            newest[device_id] = (r.time, data.online)
    return newest


def _data(item: Ready) -> Any:
    """The `data` of an event the models read (the fast reader reads flows only)."""
    return item.event.event.data if item.event.event is not None else None


def is_counter(item: Ready) -> bool:
    data = _data(item)
    return isinstance(data, MeterReadingData) and data.energy_kwh_total is not None


def _counts_energy(event: Read) -> bool:
    """Whether an event read is a meter's cumulative reading."""
    data = event.event.data if event.event is not None else None
    return isinstance(data, MeterReadingData) and data.energy_kwh_total is not None
