"""Recomputing everything from the stored events: the proof that rollups are derived data.

`rollups` recomputes every window from the stored flows (safe while ingest runs: rows that
pending marks name are left out, and added when the marks are claimed). With
`from_events`, the flows themselves are first derived again from the stored events (run it
with ingest paused: flows of events stored meanwhile would be derived twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.calendar import next_start
from fabcity.core.db import transaction
from fabcity.core.errors import Invalid
from fabcity.core.models import (
    Device,
    DirtyWindow,
    Event,
    Flow,
    FlowRollup,
    FlowRollupHour,
    FlowRollupMonth,
    SiteActivity,
    SiteActivityDay,
)
from fabcity.flows import meters
from fabcity.flows.derive import DeviceInfo, derive
from fabcity.ingest.store import FlowRow, flow_row, store_flows
from fabcity.registry import entries
from fabcity.rollups import recompute
from schemas.fast import read

Progress = Callable[[str, int, int], None]  # stage, done, total


@dataclass
class RebuildReport:
    events: int = 0
    flows: int = 0
    skipped: int = 0
    windows: int = 0


def _none(_stage: str, _done: int, _total: int) -> None:
    return None


def rebuild(
    factory: sessionmaker[Session],
    city_id: int | None = None,
    from_events: bool = False,
    progress: Progress = _none,
    events_per_batch: int = 20_000,
) -> RebuildReport:
    report = RebuildReport()
    if from_events:
        report.events, report.flows, report.skipped = _reflow(
            factory, city_id, progress, events_per_batch
        )
    with transaction(factory) as s:
        query = select(Event.city_id).distinct()
        if city_id is not None:
            query = query.where(Event.city_id == city_id)
        cities = sorted(s.scalars(query))
    # One city per transaction: a city's rollups are replaced all at once (readers see the
    # old or the new, never a mix). Filled a month at a time: one GROUP BY per table and month
    # instead of one per window, and a month's groups fit in memory however long the history.
    for done, city in enumerate(cities, start=1):
        with transaction(factory) as s:
            recompute.lock_exclusive(s, city)
            tables = (FlowRollup, FlowRollupHour, FlowRollupMonth, SiteActivity, SiteActivityDay)
            for table in tables:
                s.execute(delete(table).where(table.city_id == city))
            s.execute(delete(DirtyWindow).where(DirtyWindow.city_id == city))
            first, last = s.execute(
                select(func.min(Event.day), func.max(Event.day)).where(Event.city_id == city)
            ).one()
            month = first.replace(day=1)
            while month <= last:
                following = next_start(month, "month")
                recompute.fill(s, _of_city(city, month, following))
                month = following
            report.windows += (
                s.scalar(
                    select(func.count()).select_from(
                        select(FlowRollup.day)
                        .where(FlowRollup.city_id == city)
                        .distinct()
                        .subquery()
                    )
                )
                or 0
            )
        progress("cities", done, len(cities))
    return report


def _of_city(city_id: int, start: date, end: date) -> Callable[[Any], Any]:
    """Rows of a city from `start` up to, not including, `end`."""

    def where(model: Any) -> Any:
        return and_(model.city_id == city_id, model.day >= start, model.day < end)

    return where


def _reflow(
    factory: sessionmaker[Session], city_id: int | None, progress: Progress, per_batch: int
) -> tuple[int, int, int]:
    with transaction(factory) as s:
        stale = delete(Flow)
        counted = select(func.count()).select_from(Event)
        if city_id is not None:
            stale = stale.where(Flow.city_id == city_id)
            counted = counted.where(Event.city_id == city_id)
        s.execute(stale)
        total = s.scalar(counted) or 0
        resources = entries.resource_infos(s)
        devices = {
            i: DeviceInfo(i, kind, dict(settings or {}))
            for i, kind, settings in s.execute(select(Device.id, Device.kind, Device.settings))
        }
    done = flows = skipped = 0
    last_id = 0
    while True:
        with transaction(factory) as s:
            query = (
                select(
                    Event.id,
                    Event.payload,
                    Event.city_id,
                    Event.site_id,
                    Event.device_id,
                    Event.day,
                    Event.hour,
                )
                .where(Event.id > last_id)
                .order_by(Event.id)
                .limit(per_batch)
            )
            if city_id is not None:
                query = query.where(Event.city_id == city_id)
            rows = s.execute(query).all()
            if not rows:
                break
            batch: list[FlowRow] = []
            for pk, payload, city, site, device_id, day, hour in rows:
                device = devices.get(device_id) if device_id is not None else None
                try:
                    derived = derive(read(payload), resources, device)
                except (ValidationError, Invalid):
                    # Stored once as valid: only a registry change (a resource removed) can
                    # make it fail now. Its flows are left out and counted.
                    skipped += 1
                    continue
                batch.extend(flow_row(pk, city, site, device_id, day, hour, f) for f in derived)
            if batch:
                store_flows(s, batch)
            flows += len(batch)
            last_id = rows[-1][0]
        done += len(rows)
        progress("events", done, total)
    with transaction(factory) as s:
        meters.rebuild(s, city_id)
    return done, flows, skipped
