"""Cumulative energy counters: the one derivation that depends on another event.

A reading of `energy_kwh_total` becomes the electricity used since the device's previous
reading, in the order (time, source, id). A reading that arrives late, between two stored
ones, changes its successor's share too, so both are settled again. A full rebuild walks each
device's readings in the same order with the same function, so both ways agree.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, tuple_
from sqlalchemy.orm import Session

from fabcity.core.db import advisory_lock
from fabcity.core.models import Device, Event, Flow
from fabcity.core.settings import get_settings
from fabcity.flows.derive import DerivedFlow, DeviceInfo, counter_delta, electricity
from fabcity.rollups.windows import Window

log = logging.getLogger(__name__)

LOCK_SPACE = 0x0FAB_3E7E  # advisory locks of meters, keyed by device id
_TOTAL = Event.payload[("data", "energy_kwh_total")].as_float()
_IS_COUNTER: ColumnElement[bool] = (Event.type == "fabcity.meter.reading") & _TOTAL.is_not(None)
_COLUMNS = (
    Event.id,
    Event.device_id,
    Event.city_id,
    Event.site_id,
    Event.day,
    Event.hour,
    Event.time,
    Event.source,
    Event.event_id,
    _TOTAL,
)


def _key(row: Any) -> Any:
    return tuple_(Event.time, Event.source, Event.event_id) < tuple_(
        row.time, row.source, row.event_id
    )


def settle(session: Session, new_readings: list[int]) -> set[Window]:
    """Derive the flows of newly stored counter readings and re-derive their successors'.

    Returns the (city, day, hour) windows whose flows changed.
    """
    rows = session.execute(select(*_COLUMNS).where(Event.id.in_(new_readings))).all()
    # One writer per device at a time: a writer that settled while another's reading of the
    # same meter was uncommitted would derive from a history missing it. The second waits,
    # then (each statement sees what has committed) finds the first's readings.
    advisory_lock(session, LOCK_SPACE, {r.device_id for r in rows}, shared=False)
    affected = {row.id: row for row in rows}
    for row in rows:
        later = session.execute(
            select(*_COLUMNS)
            .where(_IS_COUNTER, Event.device_id == row.device_id)
            .where(
                tuple_(Event.time, Event.source, Event.event_id)
                > tuple_(row.time, row.source, row.event_id)
            )
            .order_by(Event.time, Event.source, Event.event_id)
            .limit(1)
        ).first()
        if later is not None:
            affected.setdefault(later.id, later)
    devices = _devices(session, {r.device_id for r in affected.values()})
    # Located by window first: flows have no index on their event.
    session.execute(
        delete(Flow).where(
            or_(
                *(
                    and_(
                        Flow.city_id == r.city_id,
                        Flow.day == r.day,
                        Flow.hour == r.hour,
                        Flow.event_pk == r.id,
                    )
                    for r in affected.values()
                )
            )
        )
    )
    flows = []
    max_kw = _max_kw()
    for row in affected.values():
        previous = session.execute(
            select(_TOTAL, Event.time)
            .where(_IS_COUNTER, Event.device_id == row.device_id, _key(row))
            .order_by(Event.time.desc(), Event.source.desc(), Event.event_id.desc())
            .limit(1)
        ).first()
        total, time = (previous[0], previous[1]) if previous is not None else (None, None)
        flows.extend(_flows(row, total, time, devices[row.device_id], max_kw))
    _insert(session, flows)
    return {(r.city_id, r.day, r.hour) for r in affected.values()}


def rebuild(session: Session, city_id: int | None = None, device_id: int | None = None) -> int:
    """Derive every counter reading's flow by walking each device's readings in order (of a
    city, or of one device: its settings changed).

    The caller has deleted the flows of the readings concerned. Returns readings walked.
    """
    query = (
        select(*_COLUMNS)
        .where(_IS_COUNTER)
        .order_by(Event.device_id, Event.time, Event.source, Event.event_id)
    )
    if city_id is not None:
        query = query.where(Event.city_id == city_id)
    if device_id is not None:
        query = query.where(Event.device_id == device_id)
    rows = session.execute(query).all()
    devices = _devices(session, {r.device_id for r in rows})
    flows: list[dict[str, Any]] = []
    previous: tuple[int, float, datetime] | None = None
    max_kw = _max_kw()
    for row in rows:
        same = previous is not None and previous[0] == row.device_id
        total, time = (previous[1], previous[2]) if previous is not None and same else (None, None)
        flows.extend(_flows(row, total, time, devices[row.device_id], max_kw))
        previous = (row.device_id, row[-1], row.time)
    _insert(session, flows)
    return len(rows)


def _insert(session: Session, flows: list[dict[str, Any]]) -> None:
    if flows:
        # Ids from the sequence's default: on PostgreSQL each is the start of a block of its
        # own, so no pending mark's range can hold these flows; their hours are rebuilt.
        session.execute(insert(Flow), flows)


def _devices(session: Session, ids: set[int]) -> dict[int, DeviceInfo]:
    found = session.execute(
        select(Device.id, Device.kind, Device.settings).where(Device.id.in_(ids))
    ).all()
    return {i: DeviceInfo(i, kind, dict(settings or {})) for i, kind, settings in found}


def _max_kw() -> float:
    return get_settings().max_meter_kw


# A reading's interval is at least this long: two readings of one instant may still differ by
# the rounding of a counter's last digit.
_MIN_INTERVAL_H = 1 / 3600


def _flows(
    row: Any,
    previous_total: float | None,
    previous_time: datetime | None,
    device: DeviceInfo,
    max_kw: float,
) -> list[dict[str, Any]]:
    delta = counter_delta(previous_total, row[-1])
    if delta is None or delta <= 0:
        return []
    assert previous_time is not None  # a delta has a previous reading
    hours = max((row.time - previous_time).total_seconds() / 3600, _MIN_INTERVAL_H)
    if delta > max_kw * hours:
        # A counter that reads a reset and then a huge total, again and again, would add
        # without bound (each reading is under the ingest bounds; their sum is not). A rise
        # faster than any fab lab's supply is a meter replaced or a forged reading: the event
        # stays stored, its use is not counted, and the log says so. Settling and rebuilding
        # both pass here, so they agree.
        log.warning(
            "energy counter rose faster than %s kW; not counted as use",
            max_kw,
            extra={"device_id": row.device_id, "event_pk": row.id, "kwh": delta},
        )
        return []
    flow: DerivedFlow = electricity(delta, device)
    return [
        {
            "event_pk": row.id,
            "city_id": row.city_id,
            "site_id": row.site_id,
            "device_id": row.device_id,
            "day": row.day,
            "hour": row.hour,
            **flow._asdict(),
        }
    ]
