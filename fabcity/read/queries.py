"""Reading metrics. Reads rollups only; never scans raw events on a request path."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Date, DateTime, cast, func, literal, null, select, true, union_all
from sqlalchemy.orm import Session

from fabcity.core import calendar, models
from fabcity.core.calendar import Interval
from fabcity.core.db import is_postgres
from fabcity.core.errors import Invalid
from fabcity.core.models import (
    CityFlowRollup,
    CityFlowRollupHour,
    CityFlowRollupMonth,
    Device,
    FlowRollup,
    FlowRollupHour,
    FlowRollupMonth,
    Resource,
    Site,
    SiteActivity,
    SiteActivityDay,
    SiteActivityMonth,
)
from fabcity.read import metrics
from fabcity.read.metrics import Cell, GroupBy, WindowFacts
from fabcity.registry import entries
from schemas import api

MAX_WINDOWS = 2000
# An export streams span by span, so it may go far past MAX_WINDOWS; but not without end: ten
# years of hours, or 270 of days, per city.
MAX_EXPORT_WINDOWS = 100_000
DEFAULT_DAYS = 30

Start = date | datetime


def parse_names(names: str | None) -> list[str]:
    # Each once, in the order first asked: a name repeated a thousand times in one URL would
    # otherwise ask for a thousand copies of a year by day by site.
    wanted = list(dict.fromkeys(n.strip() for n in (names or "").split(",") if n.strip()))
    wanted = wanted or list(metrics.DEFAULT_NAMES)
    unknown = [n for n in wanted if n not in metrics.METRICS]
    if unknown:
        raise Invalid(f"unknown metric {', '.join(unknown)}; known: {', '.join(metrics.METRICS)}")
    return wanted


def today_in(timezone: str) -> date:
    return datetime.now(UTC).astimezone(ZoneInfo(timezone)).date()


def resolve_period(city: models.City, first: date | None, last: date | None) -> tuple[date, date]:
    """[first, last] with the defaults: up to today in the city, the last 30 days."""
    for name, day in (("from", first), ("to", last)):
        if day is not None and not calendar.FIRST_DAY <= day <= calendar.LAST_DAY:
            raise Invalid(
                f"`{name}` ({day}) is outside the days that can be read, "
                f"{calendar.FIRST_DAY} to {calendar.LAST_DAY}"
            )
    last = last or today_in(city.timezone)
    first = first or max(last - timedelta(days=DEFAULT_DAYS - 1), calendar.FIRST_DAY)
    if first > last:
        raise Invalid(f"`from` ({first}) is after `to` ({last})")
    return first, last


def _check_count(first: date, last: date, interval: Interval, most: int, advice: str) -> None:
    """Refuse a period of more than `most` windows, counted from the dates before any window
    is built: 500 years of hours would be 4.4 million of them."""
    count = calendar.count_windows(first, last, interval)
    if count > most:
        raise Invalid(f"{count} windows asked; at most {most}: {advice}")


@dataclass(frozen=True)
class Frame:
    """The windows of a series, in order, and what each window's metrics need beyond its
    flows; the days read (every window whole) and the one site asked for, if any."""

    city: models.City
    zone: ZoneInfo
    starts: list[Start]
    facts: list[WindowFacts]
    read_from: date
    read_to: date
    site: str | None
    site_id: int | None


def frame(
    session: Session,
    city_slug: str,
    first: date | None,
    last: date | None,
    interval: Interval,
    now: datetime | None = None,
    site: str | None = None,
) -> Frame:
    """Every window that overlaps [first, last]; a window not over at `now` (the present by
    default) is `partial`. With `site`, that site's events only: one site of one, its
    coverage its own."""
    city = entries.get_city(session, city_slug)
    # An unknown site is a 404 like an unknown city, never an empty series that reads as quiet.
    site_id = entries.get_site(session, city, site).id if site is not None else None
    f = _windows_of(city, first, last, interval, site, site_id)
    coverage = _coverage(session, city.id, f.read_from, f.read_to, interval, f.zone, site_id)
    # A site retired before a window began is not active in it; one retired since was.
    active_at = entries.active_sites(session, city.id) if site is None else _one_site
    return _with_facts(f, interval, coverage, active_at, now or datetime.now(UTC))


def frames(
    session: Session,
    slugs: list[str],
    first: date | None,
    last: date | None,
    interval: Interval,
    now: datetime | None = None,
) -> list[Frame]:
    """`frame` of each city, their coverage read at once: comparing ten cities is then a few
    queries, not a few per city."""
    found = {
        c.slug: c for c in session.scalars(select(models.City).where(models.City.slug.in_(slugs)))
    }
    for slug in slugs:
        if slug not in found:
            entries.get_city(session, slug)  # the 404 of an unknown city
    bare = [_windows_of(found[slug], first, last, interval) for slug in slugs]
    zones = {f.city.id: f.zone for f in bare}
    lo, hi = min(f.read_from for f in bare), max(f.read_to for f in bare)
    coverage = _coverages(session, zones, lo, hi, interval)
    active = entries.active_sites_of(session, list(zones))
    now = now or datetime.now(UTC)
    return [
        _with_facts(f, interval, coverage.get(f.city.id, {}), active[f.city.id], now) for f in bare
    ]


def _windows_of(
    city: models.City,
    first: date | None,
    last: date | None,
    interval: Interval,
    site: str | None = None,
    site_id: int | None = None,
) -> Frame:
    """A frame's windows, without their facts yet."""
    zone = ZoneInfo(city.timezone)
    first, last = resolve_period(city, first, last)
    _check_count(first, last, interval, MAX_WINDOWS, "widen the interval, or export CSV")
    days = calendar.window_starts(first, last, interval)
    # A window is read whole, even where it reaches outside [first, last].
    read_from, read_to = days[0], calendar.next_start(days[-1], interval) - timedelta(days=1)
    starts: list[Start] = (
        # Real hours: 23 on the day the clocks go forward, 25 on the day they go back.
        [h.start for d in days for h in calendar.hours_of_day(d, zone)]
        if interval == "hour"
        else list(days)
    )
    starts = sorted(set(starts))
    return Frame(city, zone, starts, [], read_from, read_to, site, site_id)


def _with_facts(
    f: Frame,
    interval: Interval,
    coverage: dict[Start, tuple[int, int]],
    active_at: Callable[[datetime], int],
    now: datetime,
) -> Frame:
    facts = []
    zone, population = f.zone, f.city.population
    now = now.astimezone(UTC)
    first = f.starts[0] if f.starts else None
    if first is not None and not isinstance(first, datetime):
        bounds = _bounds(zone, interval, first, len(f.starts))
    else:  # hours: real hours, each made as `_hours` and `window_end` make it
        hours_of: list[datetime] = f.starts  # type: ignore[assignment]
        bounds = [
            (s.astimezone(UTC), _hours(s, interval, zone), window_end(s, interval, zone))
            for s in hours_of
        ]
    for start, (began, hours, end) in zip(f.starts, bounds, strict=True):
        events, reporting = coverage.get(start, (0, 0))
        facts.append(
            WindowFacts(hours, active_at(began), reporting, events, population, partial=end > now)
        )
    return replace(f, facts=facts)


@lru_cache(maxsize=16)  # at most 2,000 windows each: a few MB at worst
def _bounds(
    zone: ZoneInfo, interval: Interval, first: date, count: int
) -> list[tuple[datetime, float, datetime]]:
    """The `count` windows from `first` on: each one's start and end in UTC (local midnights,
    as `window_end` has them) and its hours. The same for every request of a period: a year by
    day is 365 of them, 5 ms to make again each time."""
    days = [first]
    for _ in range(count):
        days.append(calendar.next_start(days[-1], interval))
    midnights = [datetime.combine(day, time(), zone).astimezone(UTC) for day in days]
    return [(a, (b - a).total_seconds() / 3600, b) for a, b in pairwise(midnights)]


def metric_series(
    session: Session,
    city_slug: str,
    names: list[str],
    first: date | None,
    last: date | None,
    interval: Interval,
    group_by: GroupBy | None,
    now: datetime | None = None,
    site: str | None = None,
) -> api.MetricsResponse:
    """Every window that overlaps [first, last] (`frame`), each metric computed over the
    whole window from its cells. The JSON API answers with `series.series_json`, which adds
    up the sums in SQL; this is the straightforward computation, for CSV and NGSI-LD."""
    f = frame(session, city_slug, first, last, interval, now, site)
    groups = cell_groups(session, f, interval, group_by, names)
    series: list[api.Series] = []
    for name in names:
        metric = metrics.METRICS[name]
        for key, by_start in groups.items():
            points = [
                _point(start, compute(name, by_start.get(start, []), ctx), ctx)
                for start, ctx in zip(f.starts, f.facts, strict=True)
            ]
            series.append(api.Series(name=name, unit=metric.unit, key=key, points=points))
    return api.MetricsResponse(
        city=f.city.slug,
        interval=interval,
        timezone=f.city.timezone,
        group_by=group_by,
        series=series,
    )


def cell_groups(
    session: Session,
    f: Frame,
    interval: Interval,
    group_by: GroupBy | None,
    names: Sequence[str] | None = None,
) -> dict[str | None, dict[Start, list[Cell]]]:
    """The cells of each window, by group (one group, None, without `group_by`), the groups
    in order: each window's cells split in one pass (a year by day by site is 7,300 windows
    of a group: filtering them per metric cost most of the request).

    Given the `names` of the metrics computed from them, cells that need not tell sites or
    devices apart (no site asked for, no breakdown by either, no metric that counts
    machines) come from the city's own cubes: a twentieth of the cells with 20 sites. Every
    other metric is a sum over cells of a kind, or of such sums, and a city cell is the sum
    of its sites' cells of its kind (its state included), so each value is the same to the
    last digit (tests/fabcity/read/test_series.py compares them)."""
    city_level = names is not None and f.site is None and not reads_sites(names, group_by)
    cells = _cells(session, f.city.id, f.read_from, f.read_to, interval, f.zone, city_level)
    if f.site is not None:
        cells = {k: [c for c in cs if c.site == f.site] for k, cs in cells.items()}
    if group_by is None:
        return {None: cells}
    groups: dict[str | None, dict[Start, list[Cell]]] = {}
    one_site = f.site is not None
    for start, window in cells.items():
        for c in window:
            group = metrics.group_key(c, group_by, one_site)
            groups.setdefault(group, {}).setdefault(start, []).append(c)
    return dict(sorted(groups.items()))


def chunks(
    session: Session, city_slug: str, first: date | None, last: date | None, interval: Interval
) -> list[tuple[date, date]]:
    """[first, last] cut on window boundaries into spans of at most a few hundred windows,
    so a long export is read a span at a time (`MAX_EXPORT_WINDOWS` applies, not
    `MAX_WINDOWS`)."""
    city = entries.get_city(session, city_slug)
    first, last = resolve_period(city, first, last)
    _check_count(first, last, interval, MAX_EXPORT_WINDOWS, "export a shorter period")
    starts = calendar.window_starts(first, last, interval)
    step = 31 if interval == "hour" else 366  # days of 24 windows, or windows
    spans = []
    for i in range(0, len(starts), step):
        part = starts[i : i + step]
        spans.append(
            (
                max(part[0], first),
                min(calendar.next_start(part[-1], interval), last + timedelta(days=1))
                - timedelta(days=1),
            )
        )
    return spans


def compute(name: str, cells: Sequence[Cell], ctx: WindowFacts) -> metrics.Value:
    """A metric of one window, with its confidence; a window without a single event says so."""
    return judged(metrics.METRICS[name].compute(cells, ctx), ctx)


def judged(value: metrics.Value, ctx: WindowFacts) -> metrics.Value:
    """A window's value with its confidence; a window without a single event says so."""
    if value.value is None and value.range is None and not ctx.events:
        value = metrics.missing(metrics.NO_EVENTS)
    return metrics.assess(value, ctx)


def _one_site(_: datetime) -> int:
    """A site's own series: its one site is the whole of what may report."""
    return 1


def window_end(start: Start, interval: Interval, zone: ZoneInfo) -> datetime:
    """The instant a window is over: an hour's real end, or the local midnight after a day,
    week, month or year. A window that ends after now is partial."""
    if isinstance(start, datetime):
        return calendar.hour_at(start, zone).end
    return datetime.combine(calendar.next_start(start, interval), time(), zone)


@dataclass(frozen=True)
class Period:
    """One window spanning [first, last]: what a summary and the material flows are made of."""

    city: models.City
    first: date
    last: date
    cells: list[Cell]
    facts: WindowFacts

    # The totals of each list of cells asked about, kept with the list (an id is only unique
    # while its object lives): a summary asks 16 figures of the period's cells and five
    # accounts of each category's, and each figure made its own `CellTotals`, selecting and
    # adding up the same classes of cells again (DMC alone is a term of four of them).
    _totals: dict[int, tuple[Sequence[Cell], metrics.CellTotals]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def value(self, name: str, cells: Sequence[Cell] | None = None) -> metrics.Value:
        cells = self.cells if cells is None else cells
        computed = metrics.METRICS[name].compute
        if not isinstance(computed, metrics.Additive | metrics.FromTotals):
            return compute(name, cells, self.facts)
        kept = self._totals.get(id(cells))
        if kept is None:
            kept = self._totals[id(cells)] = (cells, metrics.CellTotals(cells))
        return judged(computed.of(kept[1], self.facts), self.facts)


def read_period(
    session: Session,
    city_slug: str,
    first: date | None,
    last: date | None,
    now: datetime | None = None,
    city_level: bool = False,
) -> Period:
    """The cells of [first, last] summed over the whole period, in the database; `partial`
    when the period is not over at `now` (the present by default). `city_level`: from the
    city's own cubes, a twentieth of the rows with 20 sites, where nothing asked of the
    cells tells sites or devices apart (`reads_sites`)."""
    city = entries.get_city(session, city_slug)
    zone = ZoneInfo(city.timezone)
    first, last = resolve_period(city, first, last)
    cells = _cells(session, city.id, first, last, "period", zone, city_level).get(first, [])
    events, reporting = _coverage(session, city.id, first, last, "period", zone).get(first, (0, 0))
    ctx = WindowFacts(
        calendar.hours_between(first, last + timedelta(days=1), zone),
        entries.active_sites(session, city.id)(datetime.combine(first, time(), zone)),
        reporting,
        events,
        city.population,
        partial=window_end(last, "day", zone) > (now or datetime.now(UTC)),
    )
    return Period(city, first, last, cells, ctx)


def reads_sites(names: Iterable[str], group_by: GroupBy | None) -> bool:
    """Whether these metrics, broken down so, need cells of each site and device: a breakdown
    by them, or a metric that counts machines (utilization)."""
    return group_by in ("site", "device") or not metrics.BY_MACHINE.isdisjoint(names)


def _start_of(row: Any, bucket: Bucket, first: date, zone: ZoneInfo) -> Start:
    """The window a row of a grouped query falls in: its local hour, its day (or week, month,
    year start), or the whole period."""
    if bucket == "hour":
        return _local_hour(row[0], row[1], zone)
    if bucket == "period":
        return first
    start: Start = row[0]
    return start


def _local_hour(day: date, hour: int, zone: ZoneInfo) -> datetime:
    """The start of a local day's hour window by its key (`calendar.hour_key`), with its
    offset: the two passes of an hour the clock repeats are two windows."""
    try:
        return calendar.hour_window(day, hour, zone).start
    except ValueError:  # rows keyed in another zone than the city's now (not read as windows)
        return datetime(day.year, day.month, day.day, hour % 24, tzinfo=zone)


def _hours(start: Start, interval: Interval, zone: ZoneInfo) -> float:
    if isinstance(start, datetime):
        # Its true length: half an hour where the clock moves by half an hour (Lord Howe).
        return calendar.hour_at(start, zone).hours
    return calendar.hours_between(start, calendar.next_start(start, interval), zone)


def _point(start: Start, value: metrics.Value, ctx: WindowFacts) -> api.Point:
    return api.Point(start=start, partial=ctx.partial, coverage=coverage(ctx), **said(value))


def said(value: metrics.Value) -> dict[str, Any]:
    """A value's fields as a point, a figure or a part of a breakdown says them."""
    return {
        # Ratios of integer sums: 9 decimals keep every digit the inputs had.
        "value": None if value.value is None else round(value.value, 9),
        "state": value.state,
        "reason": value.reason,
        "terms": list(value.terms) if value.terms is not None else None,
        "range": [round(v, 9) for v in value.range] if value.range is not None else None,
        "confidence": value.confidence,
    }


def coverage(ctx: WindowFacts) -> api.Coverage:
    return api.Coverage(
        events=ctx.events, sites_reporting=ctx.sites_reporting, sites_active=ctx.sites_active
    )


# Reading rollups ------------------------------------------------------------------------------
#
# Hours and days are read as stored. Longer windows, and a whole period, are summed in the
# database, and whole months come from the month rollups (the days at either end of a period
# from the day rollups): a year of a busy city is ~15,000 day rows but ~500 month rows, and its
# coverage 365 day rows per site instead of 8,760 hours. That is what keeps a year's summary
# within the latency budget (docs/query-benchmark.md). Sums of integers are exact, so the
# metrics are the same to the last digit as when the rows were summed in Python.

Bucket = Literal["hour", "day", "week", "month", "year", "period"]
# Every key an hour can have (`calendar.hour_key`). The hour rollup's primary key begins with
# the hour: naming each one lets PostgreSQL descend the index once per hour for a city's days,
# where without it it read the whole table (every city's every hour).
HOUR_KEYS = tuple(range(2 * calendar.SECOND_PASS))
_CUBE_DIMS = ("site_id", "device_id", "action", "resource", "ring", "fate", "recycled", "design",
              "state")  # fmt: skip
_CUBE_MEASURES = ("amount", "design_mass", "design_mass_flows", "flows")


_A_MONDAY = date(1, 1, 1)  # before `calendar.FIRST_DAY`


def _window(session: Session, day: Any, bucket: Bucket) -> Any:
    """The first day of the week (ISO, Monday), month or year holding `day`, in SQL."""
    if is_postgres(session) and bucket == "week":
        # The Monday on or before: days since a Monday (1 January of year 1, before any day
        # that can be read) modulo 7. Integer arithmetic, a third of date_trunc's cost on a
        # year of day rows.
        return day - (day - literal(_A_MONDAY, Date)) % 7
    if is_postgres(session):
        return cast(func.date_trunc(bucket, cast(day, DateTime)), Date)
    modifiers = {
        # SQLite: 'weekday 0' moves forward to Sunday (or stays on one); 6 days back is Monday.
        "week": ("weekday 0", "-6 days"),
        "month": ("start of month",),
        "year": ("start of year",),
    }[bucket]
    return func.date(day, *modifiers, type_=Date)


def site_and_device(cube: Any, city_level: bool) -> list[Any]:
    """A cube's site and device columns: 0 in a city's own cubes, which sum both away."""
    if city_level:
        return [literal(0).label("site_id"), literal(0).label("device_id")]
    return [cube.site_id, cube.device_id]


def _cells(
    session: Session,
    city_id: int,
    first: date,
    last: date,
    bucket: Bucket,
    zone: ZoneInfo,
    city_level: bool = False,
) -> dict[Start, list[Cell]]:
    """The cells of each window; from the city's own cubes when `city_level` (their site and
    device then read as 0, and named "")."""
    day, hour, month = (
        (CityFlowRollup, CityFlowRollupHour, CityFlowRollupMonth)
        if city_level
        else (FlowRollup, FlowRollupHour, FlowRollupMonth)
    )

    def columns(t: Any) -> list[Any]:
        rest = (getattr(t, c) for c in (*_CUBE_DIMS[2:], *_CUBE_MEASURES))
        return [*site_and_device(t, city_level), *rest]

    window: list[Any]
    if bucket in ("hour", "day"):
        table: Any = hour if bucket == "hour" else day
        window = [table.day, table.hour] if bucket == "hour" else [table.day]
        rows = select(*window, *columns(table)).where(
            table.city_id == city_id, table.day.between(first, last)
        )
        if bucket == "hour" and not city_level:
            rows = rows.where(table.hour.in_(HOUR_KEYS))
    else:
        # Whole months from the month rollups, the days at either end from the day rollups.
        parts = [
            select(t.day, *columns(t)).where(t.city_id == city_id, t.day.between(lo, hi))
            for t, lo, hi in (
                # a month row's day is its first: right for months and years, not weeks
                [(day, first, last)] if bucket == "week" else _sources(first, last, day, month)
            )
        ]
        both = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
        dims = [both.c[d] for d in _CUBE_DIMS]
        window = [] if bucket == "period" else [_window(session, both.c.day, bucket).label("w")]
        sums = (func.sum(both.c[m]).label(m) for m in _CUBE_MEASURES)
        rows = select(*window, *dims, *sums).group_by(*window, *dims)
    cube = rows.subquery()
    if city_level:
        query = select(cube, literal(""), null(), Resource.dimension, Resource.mfa_category).join(
            Resource, Resource.name == cube.c.resource
        )
    else:
        query = (
            select(cube, Site.slug, Device.slug, Resource.dimension, Resource.mfa_category)
            .join(Site, Site.id == cube.c.site_id)
            .outerjoin(Device, Device.id == cube.c.device_id)
            .join(Resource, Resource.name == cube.c.resource)
        )
    width = len(window)
    cells: dict[Start, list[Cell]] = defaultdict(list)
    for row in session.execute(query):
        start = _start_of(row, bucket, first, zone)
        c = row[width:]
        # c: the cube's dimensions and measures, then site, device, dimension, category.
        cells[start].append(
            Cell(start, c[13], c[14] or "", c[2], c[3], c[15], c[16], c[4], c[5], bool(c[6]),
                 c[7], c[8], int(c[9]), int(c[10]), int(c[11]), int(c[12]))
        )  # fmt: skip
    return cells


def _sources(
    first: date, last: date, day: Any = FlowRollup, month: Any = FlowRollupMonth
) -> list[tuple[Any, date, date]]:
    """(rollup table, from, to) covering [first, last]: months where whole, else days (of the
    day and month cubes given: the site-level ones, or a city's)."""
    after_last = last + timedelta(days=1)
    months_from = first if first.day == 1 else calendar.next_start(first, "month")
    months_to = after_last.replace(day=1)  # the first month not wholly inside
    if months_from >= months_to:
        return [(day, first, last)]
    found: list[tuple[Any, date, date]] = []
    if first < months_from:
        found.append((day, first, months_from - timedelta(days=1)))
    found.append((month, months_from, months_to - timedelta(days=1)))
    if months_to <= last:
        found.append((day, months_to, last))
    return found


def _coverage(
    session: Session,
    city_id: int,
    first: date,
    last: date,
    bucket: Bucket,
    zone: ZoneInfo,
    site_id: int | None = None,
) -> dict[Start, tuple[int, int]]:
    """Events and sites reporting per window (of one site when `site_id` is given), summed in
    the database."""
    return _coverages(session, {city_id: zone}, first, last, bucket, site_id).get(city_id, {})


def _coverages(
    session: Session,
    zones: dict[int, ZoneInfo],
    first: date,
    last: date,
    bucket: Bucket,
    site_id: int | None = None,
) -> dict[int, dict[Start, tuple[int, int]]]:
    """`_coverage` of each city (by id, with its time zone), in one query."""
    # Months and years are read whole (a window is), so from the month rows: a year of ten
    # cities by month is 2,400 rows of them against 73,000 of days.
    t: type[SiteActivity] | type[SiteActivityDay] | type[SiteActivityMonth] = (
        SiteActivity
        if bucket == "hour"
        else SiteActivityMonth
        if bucket in ("month", "year")
        else SiteActivityDay
    )
    window: list[Any]
    if bucket in ("hour", "day"):
        window = [t.day, SiteActivity.hour] if bucket == "hour" else [t.day]
    else:
        window = [] if bucket == "period" else [_window(session, t.day, bucket)]
    # Summed per window in the database (a year by day is 7,300 rows of a site and a day):
    # per site first, then the sites counted (COUNT(DISTINCT) sorted every row). An hour's or
    # a day's rows are one per site already.
    labels = [w.label(f"w{i}") for i, w in enumerate(window)]
    where = (
        t.city_id.in_(zones),
        t.day.between(first, last),
        true() if site_id is None else t.site_id == site_id,
    )
    if bucket in ("hour", "day"):
        per_site = select(*labels, t.city_id, t.events.label("events")).where(*where).subquery()
    else:
        per_site = (
            select(*labels, t.city_id, func.sum(t.events).label("events"))
            .where(*where)
            .group_by(*window, t.city_id, t.site_id)
            .subquery()
        )
    windows = [per_site.c[f"w{i}"] for i in range(len(window))]
    query = select(
        *windows, per_site.c.city_id, func.sum(per_site.c.events), func.count()
    ).group_by(*windows, per_site.c.city_id)
    found: dict[int, dict[Start, tuple[int, int]]] = {}
    for row in session.connection().execute(query).all():
        city_id, events, sites = row[-3:]
        start = _start_of(row, bucket, first, zones[city_id])
        held = found.setdefault(city_id, {})
        # (two keys of one hour, read in another zone: added)
        before = held.get(start, (0, 0))
        held[start] = (before[0] + int(events), before[1] + sites)
    return found
