"""Recomputing the rollups of dirty windows from the stored flows and events.

A window's rollup rows are deleted and rebuilt with `INSERT … SELECT … GROUP BY`, so the
result depends only on what is stored: incremental recompute and a full rebuild agree. The
quantities are integers (millionths), so the sums do not depend on the order of the rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    Integer,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from fabcity import windows
from fabcity.db import is_postgres
from fabcity.models import (
    Design,
    Event,
    Flow,
    FlowRollup,
    FlowRollupHour,
    FlowRollupMonth,
    Resource,
    SiteActivity,
    SiteActivityDay,
)
from fabcity.windows import Window

_DESIGN = case(
    (Flow.design_url.is_(None), literal("")),
    (Design.id.is_(None), literal("unregistered")),
    (Design.is_open, literal("open")),
    else_=literal("closed"),
)
# Things made of a registered design with a mass: count × mass, in millionths of kg.
_MODELLED = and_(
    Flow.action.in_(("produce", "modify")),
    Resource.dimension == "count",
    Design.mass_kg.is_not(None),
)
_DIMS = (
    Flow.city_id,
    Flow.day,
    Flow.site_id,
    Flow.device_id,
    Flow.action,
    Flow.resource,
    Flow.ring,
    Flow.fate,
    Flow.recycled,
    _DESIGN,
    Flow.state,
)
_MEASURES = (
    func.sum(Flow.amount),
    func.coalesce(
        func.sum(
            case((_MODELLED, cast(func.round(Flow.amount * Design.mass_kg), Integer)), else_=0)
        ),
        0,
    ),
    func.count(case((_MODELLED, 1))),
    func.count(),
)
_DIM_NAMES = [
    "city_id",
    "day",
    "site_id",
    "device_id",
    "action",
    "resource",
    "ring",
    "fate",
    "recycled",
    "design",
    "state",
]
_MEASURE_NAMES = ["amount", "design_mass", "design_mass_flows", "flows"]


def _cube(where: Any, hourly: bool) -> tuple[list[str], Any]:
    """The rollup rows of the flows matching `where`, and the columns they fill."""
    dims = (*_DIMS, Flow.hour) if hourly else _DIMS
    names = [*_DIM_NAMES, "hour"] if hourly else _DIM_NAMES
    query = (
        select(*dims, *_MEASURES)
        .select_from(Flow)
        .join(Resource, Resource.name == Flow.resource)
        .outerjoin(Design, Design.url == Flow.design_url)
        .where(where)
        .group_by(*dims)
    )
    return [*names, *_MEASURE_NAMES], query


def recompute(session: Session, claimed: list[Window]) -> None:
    """Rebuild the rollups of the given (city, day, hour) windows: the hours from their
    flows, then each day they fall in from its hours."""
    if not claimed:
        return
    hours = in_hours(claimed)
    for table in (FlowRollupHour, SiteActivity):
        session.execute(delete(table).where(hours(table)))
    _fill_hours(session, hours)
    touched = {(c, d) for c, d, _ in claimed}
    days = in_days(touched)
    for daily in (FlowRollup, SiteActivityDay):
        session.execute(delete(daily).where(days(daily)))
    _fill_days(session, days)
    refresh_months(session, {(c, d.replace(day=1)) for c, d in touched})


def fill(session: Session, where: Callable[[Any], Any]) -> None:
    """Insert the rollups of the flows and events matching `where(model)`; the caller has
    deleted the rollups they replace (months are replaced here)."""
    _fill_hours(session, where)
    _fill_days(session, where)
    days = session.execute(select(FlowRollup.city_id, FlowRollup.day).where(where(FlowRollup)))
    refresh_months(session, {(c, d.replace(day=1)) for c, d in days})


def _fill_hours(session: Session, where: Callable[[Any], Any]) -> None:
    if is_postgres(session):
        # Aggregating millions of flows (a rebuild) in memory rather than in runs on disk.
        session.execute(text("SET LOCAL work_mem = '256MB'"))
    columns, query = _cube(where(Flow), hourly=True)
    session.execute(insert(FlowRollupHour).from_select(columns, query))
    activity = (
        select(Event.city_id, Event.day, Event.hour, Event.site_id, func.count())
        .where(where(Event))
        .group_by(Event.city_id, Event.day, Event.hour, Event.site_id)
    )
    session.execute(
        insert(SiteActivity).from_select(["city_id", "day", "hour", "site_id", "events"], activity)
    )


def _fill_days(session: Session, where: Callable[[Any], Any]) -> None:
    # The days are sums of their hours: exact (integers), and far fewer rows to read.
    hour_dims = [getattr(FlowRollupHour, name) for name in _DIM_NAMES]
    days = (
        select(*hour_dims, *(func.sum(getattr(FlowRollupHour, m)) for m in _MEASURE_NAMES))
        .where(where(FlowRollupHour))
        .group_by(*hour_dims)
    )
    session.execute(insert(FlowRollup).from_select([*_DIM_NAMES, *_MEASURE_NAMES], days))
    activity = (
        select(SiteActivity.city_id, SiteActivity.day, SiteActivity.site_id,
               func.sum(SiteActivity.events))
        .where(where(SiteActivity))
        .group_by(SiteActivity.city_id, SiteActivity.day, SiteActivity.site_id)
    )  # fmt: skip
    session.execute(
        insert(SiteActivityDay).from_select(["city_id", "day", "site_id", "events"], activity)
    )


def refresh_months(session: Session, months: set[tuple[int, date]]) -> None:
    """Replace the month rollups of (city, first day of the month) from their days."""
    others = [getattr(FlowRollup, name) for name in _DIM_NAMES if name not in ("city_id", "day")]
    for city_id, first in sorted(months):
        last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        session.execute(
            delete(FlowRollupMonth).where(
                FlowRollupMonth.city_id == city_id, FlowRollupMonth.day == first
            )
        )
        sums = (func.sum(getattr(FlowRollup, m)) for m in _MEASURE_NAMES)
        rows = (
            select(literal(city_id), literal(first, Date), *others, *sums)
            .where(FlowRollup.city_id == city_id, FlowRollup.day.between(first, last))
            .group_by(*others)
        )
        session.execute(insert(FlowRollupMonth).from_select([*_DIM_NAMES, *_MEASURE_NAMES], rows))


def in_hours(claimed: Iterable[Window]) -> Callable[[Any], Any]:
    """`city_id = c AND day = d AND hour IN (…)` per (city, day): a row-value `IN` over the
    key's columns defeats PostgreSQL's index and scans the whole table."""
    hours: dict[tuple[int, date], list[int]] = defaultdict(list)
    for city_id, day, hour in claimed:
        hours[(city_id, day)].append(hour)

    def where(model: Any) -> Any:
        return or_(
            *(
                and_(model.city_id == c, model.day == d, model.hour.in_(hs))
                for (c, d), hs in hours.items()
            )
        )

    return where


def in_days(claimed: Iterable[tuple[int, date]]) -> Callable[[Any], Any]:
    days: dict[int, list[date]] = defaultdict(list)
    for city_id, day in claimed:
        days[city_id].append(day)

    def where(model: Any) -> Any:
        return or_(*(and_(model.city_id == c, model.day.in_(ds)) for c, ds in days.items()))

    return where


def recompute_dirty(session: Session, limit: int) -> int:
    """Claim up to `limit` dirty windows and recompute them; returns how many."""
    claimed = windows.claim_dirty(session, limit)
    recompute(session, claimed)
    return len(claimed)
