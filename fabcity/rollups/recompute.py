"""Keeping the rollups equal to the sums of the stored flows and events.

Two ways, in one transaction:
- new rows (named by pending marks) are summed and their sums added to the rollup rows they
  fall in, hour, day and month (`INSERT … ON CONFLICT DO UPDATE SET x = x + new`): the cost
  follows the new rows, however many an hour already holds;
- a dirty window (an hour whose stored flows changed) is deleted and rebuilt from all its
  flows with `INSERT … SELECT … GROUP BY`, leaving out rows that marks still name; its days
  and months are summed again from their hours and days.

The quantities are integers (millionths), so sums do not depend on the order rows are added:
adding, rebuilding and a full rebuild agree to the last digit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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

from fabcity.core.db import advisory_lock, is_postgres
from fabcity.core.models import (
    CityFlowRollup,
    CityFlowRollupHour,
    CityFlowRollupMonth,
    Design,
    Event,
    Flow,
    FlowRollup,
    FlowRollupHour,
    FlowRollupMonth,
    Resource,
    RollupChange,
    SiteActivity,
    SiteActivityDay,
    SiteActivityMonth,
)
from fabcity.core.sql import insert_add, insert_replace
from fabcity.rollups import pending, windows
from fabcity.rollups.pending import Mark
from fabcity.rollups.windows import Window

_DESIGN = case(
    (Flow.design_url.is_(None), literal("")),
    (Design.id.is_(None), literal("unregistered")),
    # A design without a licence, or with one that maps to none, is neither open nor closed.
    (Design.is_open.is_(None), literal("unknown")),
    (Design.is_open.is_(True), literal("open")),
    else_=literal("closed"),
)
# Things made of a registered design with a mass: count × mass, in millionths of kg. Not for
# a count that came weighed: its mass is a flow of its own, and counts once.
_MODELLED = and_(
    Flow.action.in_(("produce", "modify")),
    Resource.dimension == "count",
    Design.mass_kg.is_not(None),
    Flow.weighed.is_(False),
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
# A city's cubes: the same sums without the site and the device (models._CityFlowCube).
_CITY_DIM_NAMES = [n for n in _DIM_NAMES if n not in ("site_id", "device_id")]
# Each site-level cube and the city cube that sums it.
_CITY_OF: dict[Any, Any] = {
    FlowRollupHour: CityFlowRollupHour,
    FlowRollup: CityFlowRollup,
    FlowRollupMonth: CityFlowRollupMonth,
}


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


# Rollup writers of a city hold this lock (with the city's id as the second key): adding
# takes it shared (additions commute), rebuilding an hour exclusive, so a rebuild never
# replaces rows an uncommitted addition is changing, nor leaves out rows it added.
LOCK_SPACE = 0x0FAB_C17E


def lock_exclusive(session: Session, city_id: int) -> None:
    """Hold the city's rollups for a rebuild until the transaction ends."""
    _lock(session, city_id, shared=False)


def _lock(session: Session, city_id: int, shared: bool) -> None:
    advisory_lock(session, LOCK_SPACE, [city_id], shared)


def recompute(session: Session, claimed: list[Window], marks: Sequence[Mark] = ()) -> set[Window]:
    """Rebuild the claimed (city, day, hour) windows and add the rows the marks name; returns
    every window whose rollups changed."""
    if not claimed and not marks:
        return set()
    rebuilt = {(c, d) for c, d, _ in claimed}
    shared = {m.city_id: True for m in marks} | {c: False for c, _ in rebuilt}
    for city_id, is_shared in sorted(shared.items()):
        _lock(session, city_id, is_shared)
    if claimed:
        hours = in_hours(claimed)
        for table in (FlowRollupHour, CityFlowRollupHour, SiteActivity):
            session.execute(delete(table).where(hours(table)))
        _fill_hours(session, hours)
    touched = set(claimed)
    if marks:
        touched |= _add(session, marks, set(claimed), rebuilt)
    if rebuilt:
        days = in_days(rebuilt)
        for daily in (FlowRollup, CityFlowRollup, SiteActivityDay):
            session.execute(delete(daily).where(days(daily)))
        _fill_days(session, days)
        refresh_months(session, {(c, d.replace(day=1)) for c, d in rebuilt})
    changed(session, touched)
    return touched


def changed(session: Session, hours: Iterable[Window], at: datetime | None = None) -> None:
    """Say that the rollups of these (city, day, hour) windows changed `at` (now)."""
    at = at or datetime.now(UTC)
    rows = [{"city_id": c, "day": d, "hour": h, "changed_at": at} for c, d, h in set(hours)]
    if rows:
        keys = ["city_id", "day", "hour"]
        session.execute(insert_replace(session, RollupChange, keys, ["changed_at"]), rows)


def _add(
    session: Session, marks: Sequence[Mark], hours: set[Window], days: set[tuple[int, date]]
) -> set[Window]:
    """Add the sums of the marked rows to the hours, days and months they fall in, except
    those rebuilt in this transaction (which counted them already, or will from the hours)."""
    months = {(c, d.replace(day=1)) for c, d in days}
    columns, query = _cube(pending.flows_of(marks), hourly=True)
    hourly = [dict(zip(columns, row, strict=True)) for row in session.execute(query)]
    hourly = [r for r in hourly if (r["city_id"], r["day"], r["hour"]) not in hours]
    by_day = _summed(hourly, _DIM_NAMES, _MEASURE_NAMES)
    by_day = [r for r in by_day if (r["city_id"], r["day"]) not in days]
    by_month = _summed(
        [{**r, "day": r["day"].replace(day=1)} for r in by_day], _DIM_NAMES, _MEASURE_NAMES
    )
    by_month = [r for r in by_month if (r["city_id"], r["day"]) not in months]
    site_keys = ["city_id", "day", "hour", "site_id"]
    activity = select(*(getattr(Event, k) for k in site_keys), func.count()).where(
        pending.events_of(marks)
    )
    site_hours = [
        dict(zip([*site_keys, "events"], row, strict=True))
        for row in session.execute(activity.group_by(*(getattr(Event, k) for k in site_keys)))
    ]
    site_hours = [r for r in site_hours if (r["city_id"], r["day"], r["hour"]) not in hours]
    site_days = _summed(site_hours, ["city_id", "day", "site_id"], ["events"])
    site_days = [r for r in site_days if (r["city_id"], r["day"]) not in days]
    site_months = _summed(
        [{**r, "day": r["day"].replace(day=1)} for r in site_days],
        ["city_id", "day", "site_id"],
        ["events"],
    )
    site_months = [r for r in site_months if (r["city_id"], r["day"]) not in months]
    city_keys = [*_CITY_DIM_NAMES, "hour"]
    for model, rows, measures in (
        (FlowRollupHour, hourly, _MEASURE_NAMES),
        (FlowRollup, by_day, _MEASURE_NAMES),
        (FlowRollupMonth, by_month, _MEASURE_NAMES),
        (CityFlowRollupHour, _summed(hourly, city_keys, _MEASURE_NAMES), _MEASURE_NAMES),
        (CityFlowRollup, _summed(by_day, _CITY_DIM_NAMES, _MEASURE_NAMES), _MEASURE_NAMES),
        (CityFlowRollupMonth, _summed(by_month, _CITY_DIM_NAMES, _MEASURE_NAMES), _MEASURE_NAMES),
        (SiteActivity, site_hours, ["events"]),
        (SiteActivityDay, site_days, ["events"]),
        (SiteActivityMonth, site_months, ["events"]),
    ):
        if rows:
            keys = [c.name for c in model.__table__.primary_key]
            # One order for every writer: concurrent additions wait instead of deadlocking.
            rows.sort(key=lambda r: tuple(r[k] for k in keys))
            session.execute(insert_add(session, model, keys, measures), rows)
    return {(r["city_id"], r["day"], r["hour"]) for r in (*hourly, *site_hours)}


def _summed(
    rows: Iterable[dict[str, Any]], keys: Sequence[str], measures: Sequence[str]
) -> list[dict[str, Any]]:
    sums: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        total = sums.setdefault(tuple(row[k] for k in keys), [0] * len(measures))
        for i, m in enumerate(measures):
            total[i] += int(row[m])
    return [
        {**dict(zip(keys, key, strict=True)), **dict(zip(measures, total, strict=True))}
        for key, total in sums.items()
    ]


def fill(session: Session, where: Callable[[Any], Any]) -> None:
    """Insert the rollups of the flows and events matching `where(model)`; the caller has
    deleted the rollups they replace (months are replaced here)."""
    _fill_hours(session, where)
    _fill_days(session, where)
    days = [
        *session.execute(select(FlowRollup.city_id, FlowRollup.day).where(where(FlowRollup))),
        # a month of events without flows has site activity all the same
        *session.execute(
            select(SiteActivityDay.city_id, SiteActivityDay.day).where(where(SiteActivityDay))
        ),
    ]
    refresh_months(session, {(c, d.replace(day=1)) for c, d in days})
    hours = select(SiteActivity.city_id, SiteActivity.day, SiteActivity.hour).where(
        where(SiteActivity)
    )
    changed(session, [(c, d, h) for c, d, h in session.execute(hours.distinct())])


def _fill_hours(session: Session, where: Callable[[Any], Any]) -> None:
    if is_postgres(session):
        # Aggregating millions of flows (a rebuild) in memory rather than in runs on disk.
        session.execute(text("SET LOCAL work_mem = '256MB'"))
    # Rows that marks still name are left out: they are added when their mark is claimed.
    columns, query = _cube(and_(where(Flow), pending.unmarked(Flow)), hourly=True)
    session.execute(insert(FlowRollupHour).from_select(columns, query))
    _fill_city(session, FlowRollupHour, where(FlowRollupHour))
    activity = (
        select(Event.city_id, Event.day, Event.hour, Event.site_id, func.count())
        .where(where(Event), pending.unmarked(Event))
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
    _fill_city(session, FlowRollup, where(FlowRollup))
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
        for monthly in (FlowRollupMonth, CityFlowRollupMonth, SiteActivityMonth):
            session.execute(delete(monthly).where(monthly.city_id == city_id, monthly.day == first))
        sums = (func.sum(getattr(FlowRollup, m)) for m in _MEASURE_NAMES)
        rows = (
            select(literal(city_id), literal(first, Date), *others, *sums)
            .where(FlowRollup.city_id == city_id, FlowRollup.day.between(first, last))
            .group_by(*others)
        )
        session.execute(insert(FlowRollupMonth).from_select([*_DIM_NAMES, *_MEASURE_NAMES], rows))
        _fill_city(
            session,
            FlowRollupMonth,
            and_(FlowRollupMonth.city_id == city_id, FlowRollupMonth.day == first),
        )
        active = (
            select(literal(city_id), literal(first, Date), SiteActivityDay.site_id,
                   func.sum(SiteActivityDay.events))
            .where(SiteActivityDay.city_id == city_id, SiteActivityDay.day.between(first, last))
            .group_by(SiteActivityDay.site_id)
        )  # fmt: skip
        session.execute(
            insert(SiteActivityMonth).from_select(["city_id", "day", "site_id", "events"], active)
        )


def _fill_city(session: Session, cube: Any, where: Any) -> None:
    """Insert the city cube's rows of the site-level `cube`'s rows matching `where`, just
    filled; the caller has deleted the city rows they replace."""
    names = [*_CITY_DIM_NAMES, "hour"] if cube is FlowRollupHour else _CITY_DIM_NAMES
    dims = [getattr(cube, n) for n in names]
    rows = (
        select(*dims, *(func.sum(getattr(cube, m)) for m in _MEASURE_NAMES))
        .where(where)
        .group_by(*dims)
    )
    session.execute(insert(_CITY_OF[cube]).from_select([*names, *_MEASURE_NAMES], rows))


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


def recompute_dirty(session: Session, limit: int, skip: Collection[int] = ()) -> Recomputed:
    """Claim up to `limit` dirty windows and `limit` pending marks, of cities not in `skip`,
    and bring their rollups up to date.

    A city whose recompute fails (a sum past what its columns hold, a row nobody foresaw)
    must not hold the others back: the claimed work is tried in one savepoint, and when that
    fails, again city by city, each in its own. A city that fails alone gets its marks and
    windows back, so it stays pending for a later try, and is reported in `failed`."""
    # Before claiming: a registration waiting for this lock may be inserting marks of windows
    # this claim would delete.
    windows.lock_designs(session, shared=True)
    claimed = windows.claim_dirty(session, limit, skip)
    marks = pending.claim(session, limit, skip)
    done = Recomputed(len(claimed), len(marks), set())
    if not claimed and not marks:
        return done
    by_city: dict[int, tuple[list[Window], list[Mark]]] = defaultdict(lambda: ([], []))
    for window in claimed:
        by_city[window[0]][0].append(window)
    for mark in marks:
        by_city[mark.city_id][1].append(mark)
    if len(by_city) > 1:
        # The usual case: every city at once, one savepoint's round trips.
        together = _attempt(session, claimed, marks)
        if not isinstance(together, Exception):
            done.touched = together
            return done
    for city_id, (city_windows, city_marks) in sorted(by_city.items()):
        alone = _attempt(session, city_windows, city_marks)
        if isinstance(alone, Exception):
            windows.mark_dirty(session, city_windows)
            pending.restore(session, city_marks)
            done.failed[city_id] = alone
        else:
            done.touched |= alone
    return done


def _attempt(session: Session, claimed: list[Window], marks: list[Mark]) -> set[Window] | Exception:
    """`recompute` in a savepoint: what it changed, or why it failed (and changed nothing)."""
    try:
        with session.begin_nested():
            return recompute(session, claimed, marks)
    except Exception as exc:
        return exc


@dataclass
class Recomputed:
    windows: int  # dirty windows claimed
    marks: int  # pending marks claimed
    touched: set[Window]  # windows whose rollups changed
    failed: dict[int, Exception] = field(default_factory=dict)  # city id: why, left pending
