"""Recomputing everything from the stored events: the proof that rollups are derived data.

`rollups` recomputes every window from the stored flows (safe while ingest runs: rows that
pending marks name are left out, and added when the marks are claimed). With
`from_events`, the flows themselves are first derived again from the stored events, in one
transaction that holds the cities as a zone move does: their ingest waits until it is done
(`_reflow`); events a correction took out of the count derive nothing, as at ingest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, and_, delete, func, select, true
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.calendar import next_start
from fabcity.core.db import transaction
from fabcity.core.errors import Invalid, one_line
from fabcity.core.models import (
    City,
    CityFlowRollup,
    CityFlowRollupHour,
    CityFlowRollupMonth,
    Device,
    DirtyWindow,
    Event,
    Flow,
    FlowRollup,
    FlowRollupHour,
    FlowRollupMonth,
    SiteActivity,
    SiteActivityDay,
    SiteActivityMonth,
)
from fabcity.flows import meters
from fabcity.flows.derive import DeviceInfo, derive
from fabcity.ingest import corrections
from fabcity.ingest.store import FlowRow, flow_row, store_flows
from fabcity.registry import entries
from fabcity.rollups import recompute
from fabcity.rollups.windows import Window
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
            tables = (
                FlowRollup, FlowRollupHour, FlowRollupMonth, SiteActivity, SiteActivityDay,
                CityFlowRollup, CityFlowRollupHour, CityFlowRollupMonth, SiteActivityMonth,
            )  # fmt: skip
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
    """The flows of the cities' stored events derived again, in one transaction that holds
    the cities as a zone move does (`entries.hold_cities`, exclusive): their ingest waits
    meanwhile (then answers busy: over HTTP a 503 to retry, on MQTT a batch kept
    unacknowledged), as do their corrections and registry changes (a change too answers busy
    after `entries.REGISTRY_WAIT_S`; this waits as long as it takes). Without it, an event stored
    while the flows were being derived again had its flows stored twice, once by ingest and
    once here; and a correction stored meanwhile could be missed. Without `city_id`, every
    city is held by one lock (`entries.hold_every_city`), those registered meanwhile too."""
    with transaction(factory) as s:
        stale = delete(Flow)
        mine: ColumnElement[bool] = true()  # every city
        if city_id is None:
            entries.hold_every_city(s)
        else:
            slug = s.scalars(select(City.slug).where(City.id == city_id)).one()
            entries.hold_cities(s, [slug], shared=False, patient=True)
            stale, mine = stale.where(Flow.city_id == city_id), Event.city_id == city_id
        s.execute(stale)
        total = s.scalar(select(func.count()).select_from(Event).where(mine))
        resources = entries.resource_infos(s)
        # Corrected originals, retractions and corrections overtaken by a newer one: stored,
        # but their flows do not count (`fabcity.ingest.corrections`).
        uncounted = corrections.not_counting(s, city_id)
        devices = {
            i: DeviceInfo(i, kind, dict(settings or {}))
            for i, kind, settings in s.execute(select(Device.id, Device.kind, Device.settings))
        }
        done = flows = skipped = 0
        last_id = 0
        while True:
            rows = s.execute(
                select(
                    Event.id, Event.payload, Event.city_id, Event.site_id, Event.device_id,
                    Event.day, Event.hour,
                )
                .where(mine, Event.id > last_id)
                .order_by(Event.id)
                .limit(per_batch)
            ).all()  # fmt: skip
            if not rows:
                break
            batch: list[FlowRow] = []
            for pk, payload, city, site, device_id, day, hour in rows:
                if pk in uncounted:
                    continue
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
            progress("events", done, total or 0)
        meters.rebuild(s, city_id)
    return done, flows, skipped


# Events read at a time when a device's history is derived again.
_DEVICE_CHUNK = 5000


def _device_events(session: Session, city_id: int, device_id: int) -> Iterator[list[Any]]:
    last = 0
    while True:
        rows = session.execute(
            select(
                Event.id, Event.source, Event.event_id, Event.payload, Event.site_id,
                Event.day, Event.hour,
            )
            # The city first: the events' index leads with it.
            .where(Event.city_id == city_id, Event.device_id == device_id, Event.id > last)
            .order_by(Event.id)
            .limit(_DEVICE_CHUNK)
        ).all()  # fmt: skip
        if not rows:
            return
        yield list(rows)
        last = rows[-1][0]


def rederive_device(session: Session, city_id: int, device: Device) -> set[Window]:
    """Derive the flows of every stored event of a device again, with its kind and settings
    as they are now (a registry correction, `fabcity.registry.changes`); returns the hours
    whose flows changed, for the caller to mark dirty. Events a correction took out of the
    count derive nothing, as at ingest; energy counters are walked again in order (`meters`).
    Refused (`Invalid`, naming the event) if a stored event cannot be derived any more: the
    caller's transaction then changes nothing."""
    info = DeviceInfo(device.id, device.kind, dict(device.settings or {}))
    resources = entries.resource_infos(session)
    uncounted = corrections.not_counting(session, city_id)
    session.execute(delete(Flow).where(Flow.city_id == city_id, Flow.device_id == device.id))
    touched: set[Window] = set()
    for rows in _device_events(session, city_id, device.id):
        fresh: list[FlowRow] = []
        for pk, source, event_id, payload, site_id, day, hour in rows:
            touched.add((city_id, day, hour))
            if pk in uncounted:
                continue
            try:
                derived = derive(read(payload), resources, info)
            except (ValidationError, Invalid) as exc:
                why = exc.detail if isinstance(exc, Invalid) else one_line(exc.errors())
                raise Invalid(
                    f"with these settings the stored event ({source!r}, {event_id!r}) "
                    f"cannot be derived: {why}"
                ) from exc
            fresh.extend(flow_row(pk, city_id, site_id, device.id, day, hour, f) for f in derived)
        if fresh:
            # Ids no pending mark's range holds: the rebuild of their hours counts them.
            store_flows(session, fresh)
    meters.rebuild(session, city_id, device_id=device.id)
    return touched
