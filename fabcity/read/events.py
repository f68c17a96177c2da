"""What a message became: stored events listed and read back, with their flows, corrections
and windows.

Visibility is decided here, in one place: a `Viewer` names the city (and site) a key may see,
and an event outside it is as absent as an event that never was (the route answers 404, so
a key learns nothing of another tenant's events). This side reads events, not only rollups:
it answers for one event, or a page of them, by the events' primary key.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from fabcity.core import models
from fabcity.core.calendar import Interval, hour_at, next_start, window_start
from fabcity.core.errors import Invalid, NotFound
from fabcity.flows.derive import DeviceInfo, derive
from fabcity.registry import entries
from schemas.events import (
    Corrected,
    CorrectionRef,
    DeviceUsed,
    EventSummary,
    EventView,
    EventWindow,
    StoredFlow,
)
from schemas.fast import read


@dataclass(frozen=True)
class Viewer:
    """The events a key may see: every city (None), one city, or one site of it."""

    city: str | None = None
    site: str | None = None


@dataclass(frozen=True)
class Filters:
    city: str | None = None
    site: str | None = None
    device: str | None = None
    source: str | None = None
    type: str | None = None
    start: datetime | None = None  # `time` at or after
    end: datetime | None = None  # `time` before


Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])


def _visible(session: Session, query: Q, viewer: Viewer) -> Q | None:
    """The query kept to what the viewer may see; None when that is nothing."""
    if viewer.city is None:
        return query
    city = session.scalar(select(models.City.id).where(models.City.slug == viewer.city))
    if city is None:
        return None
    query = query.where(models.Event.city_id == city)
    if viewer.site is not None:
        site = session.scalar(
            select(models.Site.id).where(
                models.Site.city_id == city, models.Site.slug == viewer.site
            )
        )
        if site is None:
            return None
        query = query.where(models.Event.site_id == site)
    return query


_NAMES = (
    select(
        models.Event,
        models.City.slug,
        models.City.timezone,
        models.Site.slug,
        models.Device.slug,
    )
    .join(models.City, models.City.id == models.Event.city_id)
    .join(models.Site, models.Site.id == models.Event.site_id)
    .outerjoin(models.Device, models.Device.id == models.Event.device_id)
)


def list_events(
    session: Session, viewer: Viewer, filters: Filters, after: int | None, limit: int
) -> list[tuple[int, EventSummary]]:
    """A page of events in the order they were stored, after the event id `after`; each with
    its row id, the key of the next page."""
    query = _visible(session, _NAMES, viewer)
    if query is None:
        return []
    if filters.city is not None:
        city = entries.get_city(session, filters.city)
        query = query.where(models.Event.city_id == city.id)
        if filters.site is not None:
            site = entries.get_site(session, city, filters.site)
            query = query.where(models.Event.site_id == site.id)
            if filters.device is not None:
                query = query.where(models.Device.slug == filters.device)
    elif filters.site is not None or filters.device is not None:
        raise Invalid("`site` and `device` are names within a `city`: give the city too")
    if filters.source is not None:
        query = query.where(models.Event.source == filters.source)
    if filters.type is not None:
        query = query.where(models.Event.type == filters.type)
    if filters.start is not None:
        query = query.where(models.Event.time >= filters.start)
    if filters.end is not None:
        query = query.where(models.Event.time < filters.end)
    if after is not None:
        query = query.where(models.Event.id > after)
    rows = session.execute(query.order_by(models.Event.id).limit(limit)).all()
    counting = _counting(session, [r[0].id for r in rows])
    return [
        (event.id, _summary(event, city, site, device, counting[event.id][0]))
        for event, city, _, site, device in rows
    ]


def get_event(session: Session, viewer: Viewer, source: str, event_id: str) -> EventView:
    """One event and what it became; NotFound also for an event the viewer may not see."""
    query = _NAMES.where(models.Event.source == source, models.Event.event_id == event_id)
    visible = _visible(session, query, viewer)
    row = session.execute(visible).first() if visible is not None else None
    if row is None:
        raise NotFound(f"no event {event_id!r} of {source!r} that this key may see")
    event, city, timezone, site, device_slug = row
    counts, why = _counting(session, [event.id])[event.id]
    device = session.get(models.Device, event.device_id) if event.device_id else None
    flows = _flows(session, event, device, counts)
    target = aliased(models.Event)
    corrects = session.execute(
        select(models.Correction, target.source, target.event_id)
        .join(target, target.id == models.Correction.target_pk)
        .where(models.Correction.event_pk == event.id)
    ).first()
    return EventView(
        **_summary(event, city, site, device_slug, counts).model_dump(),
        event=event.payload,
        flows=flows,
        device_used=(
            DeviceUsed(
                device=device.slug,
                kind=device.kind,
                adapter=device.adapter,
                settings=dict(device.settings or {}),
            )
            if device is not None
            else None
        ),
        corrects=(
            Corrected(
                source=corrects[1],
                id=corrects[2],
                kind=corrects[0].kind,
                rank=corrects[0].rank,
            )
            if corrects is not None
            else None
        ),
        corrections=_corrections_of(session, event.id),
        windows=_windows(event.time, event.day, ZoneInfo(timezone)) if counts else [],
        why=why,
    )


def _summary(
    event: models.Event, city: str, site: str, device: str | None, counts: bool
) -> EventSummary:
    return EventSummary(
        source=event.source,
        id=event.event_id,
        type=event.type,
        time=_aware(event.time),
        received_at=_aware(event.received_at),
        city=city,
        site=site,
        device=device,
        counts=counts,
    )


def _aware(at: datetime) -> datetime:
    """SQLite gives back times without their offset; they were stored in UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _counting(session: Session, pks: list[int]) -> dict[int, tuple[bool, str | None]]:
    """Whether each event counts, and why not: the rule of `fabcity.ingest.corrections`."""
    out: dict[int, tuple[bool, str | None]] = {pk: (True, None) for pk in pks}
    if not pks:
        return out
    c = models.Correction
    mine = session.execute(
        select(c.event_pk, c.target_pk, c.kind, c.rank).where(c.event_pk.in_(pks))
    )
    targets = list(session.execute(select(c.target_pk, c.kind).where(c.target_pk.in_(pks))))
    corrected: dict[int, list[str]] = defaultdict(list)
    for target, kind in targets:
        corrected[target].append(kind)
    own = list(mine)
    newest = (
        dict(
            session.execute(
                select(c.target_pk, func.max(c.rank))
                .where(c.target_pk.in_([t for _, t, _, _ in own]))
                .group_by(c.target_pk)
            ).all()
        )
        if own
        else {}
    )
    for pk in corrected:
        out[pk] = (False, "a correction of it counts instead (see `corrections`)")
    for pk, target, kind, rank in own:
        if kind == "retract":
            out[pk] = (False, "a retraction carries no flows: the event it names counts no more")
        elif rank < newest[target]:
            out[pk] = (False, "a newer correction of the same event counts instead")
    return out


def _corrections_of(session: Session, pk: int) -> list[CorrectionRef]:
    c = models.Correction
    rows = session.execute(
        select(c, models.Event.source, models.Event.event_id, models.Event.received_at)
        .join(models.Event, models.Event.id == c.event_pk)
        .where(c.target_pk == pk)
        .order_by(c.rank)
    ).all()
    last = rows[-1][0].rank if rows else 0
    return [
        CorrectionRef(
            source=source,
            id=event_id,
            kind=row.kind,
            rank=row.rank,
            reason=row.reason,
            received_at=_aware(received),
            counts=row.rank == last and row.kind == "supersede",
        )
        for row, source, event_id, received in rows
    ]


def _flows(
    session: Session, event: models.Event, device: models.Device | None, counts: bool
) -> list[StoredFlow]:
    units = {r.name: r.unit for r in entries.resource_infos(session).values()}
    if counts:
        f = models.Flow
        rows = session.scalars(
            select(f)
            .where(
                f.city_id == event.city_id,
                f.day == event.day,
                f.hour == event.hour,
                f.event_pk == event.id,
            )
            .order_by(f.id)
        )
        return [_stored(r, units, counted=True) for r in rows]
    # It counts no more: what it would derive, as a rebuild would, shown as not counted.
    info = DeviceInfo(device.id, device.kind, dict(device.settings or {})) if device else None
    try:
        derived = derive(read(event.payload), entries.resource_infos(session), info)
    except (ValidationError, Invalid):
        return []
    return [_stored(d, units, counted=False) for d in derived]


def _stored(flow: Any, units: dict[str, str], counted: bool) -> StoredFlow:
    """A flow as the event view shows it: a stored row, or one derived again (same fields)."""
    return StoredFlow(
        action=flow.action,
        resource=flow.resource,
        quantity=flow.amount / models.MICRO,
        unit=units.get(flow.resource, ""),
        ring=flow.ring,
        fate=flow.fate or None,
        recycled=flow.recycled,
        material=flow.material,
        design_url=flow.design_url,
        job=flow.job,
        state=flow.state,
        counted=counted,
    )


_INTERVALS: tuple[Interval, ...] = ("day", "week", "month", "year")


def _windows(at: datetime, day: date, zone: ZoneInfo) -> list[EventWindow]:
    """The hour of the event's instant, and the local day, week, month and year of it."""
    # A real hour, labelled with its offset: the second pass of an hour the clock repeats is
    # a window of its own, and half an hour where the clock moves by half an hour.
    hour = hour_at(_aware(at), zone)
    out = [EventWindow(interval="hour", start=hour.start, end=hour.end)]
    for interval in _INTERVALS:
        first = window_start(day, interval)
        out.append(
            EventWindow(
                interval=interval,
                start=datetime.combine(first, time(), zone),
                end=datetime.combine(next_start(first, interval), time(), zone),
            )
        )
    return out
