"""Reading metrics. Reads rollups only; never scans raw events on a request path."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabcity import metrics, registry
from fabcity.errors import Invalid
from fabcity.metrics import Cell, Context, GroupBy, Interval
from fabcity.models import Device, FlowRollup, FlowRollupHour, Resource, Site, SiteActivity
from schemas import api

MAX_WINDOWS = 2000
DEFAULT_DAYS = 30

Start = date | datetime


def parse_names(names: str | None) -> list[str]:
    wanted = [n.strip() for n in (names or "").split(",") if n.strip()]
    wanted = wanted or list(metrics.DEFAULT_NAMES)
    unknown = [n for n in wanted if n not in metrics.METRICS]
    if unknown:
        raise Invalid(f"unknown metric {', '.join(unknown)}; known: {', '.join(metrics.METRICS)}")
    return wanted


def today_in(timezone: str) -> date:
    return datetime.now(UTC).astimezone(ZoneInfo(timezone)).date()


def metric_series(
    session: Session,
    city_slug: str,
    names: list[str],
    first: date | None,
    last: date | None,
    interval: Interval,
    group_by: GroupBy | None,
) -> api.MetricsResponse:
    """Every window that overlaps [first, last], each computed over the whole window."""
    city = registry.get_city(session, city_slug)
    zone = ZoneInfo(city.timezone)
    last = last or today_in(city.timezone)
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise Invalid(f"`from` ({first}) is after `to` ({last})")
    days = metrics.window_starts(first, last, interval)
    # A window is read whole, even where it reaches outside [first, last].
    read_from, read_to = days[0], metrics.next_start(days[-1], interval) - timedelta(days=1)
    starts: list[Start] = (
        [_local_hour(d, h, zone) for d in days for h in range(24)]
        if interval == "hour"
        else list(days)
    )
    starts = sorted(set(starts))
    if len(starts) > MAX_WINDOWS:
        raise Invalid(f"{len(starts)} windows asked; at most {MAX_WINDOWS}: widen the interval")

    def start_of(day: date, hour: int) -> Start:
        return (
            _local_hour(day, hour, zone)
            if interval == "hour"
            else metrics.window_start(day, interval)
        )

    cells = _cells(session, city.id, read_from, read_to, interval, start_of)
    coverage = _coverage(session, city.id, read_from, read_to, start_of)
    active = registry.count_sites(session, city.id)

    series: list[api.Series] = []
    for name in names:
        metric = metrics.METRICS[name]
        keys: list[str | None] = [None]
        if group_by is not None:
            keys = [*sorted({metrics.group_key(c, group_by) for cs in cells.values() for c in cs})]
        for key in keys:
            points = []
            for start in starts:
                window = cells.get(start, [])
                if key is not None and group_by is not None:
                    window = [c for c in window if metrics.group_key(c, group_by) == key]
                events, reporting = coverage.get(start, (0, 0))
                ctx = Context(
                    _hours(start, interval, zone), active, reporting, events, city.population
                )
                value = metric.compute(window, ctx)
                if value.value is None and value.range is None and not events:
                    value = metrics.missing("no events in this window")
                points.append(_point(start, value, events, reporting, active))
            series.append(api.Series(name=name, unit=metric.unit, key=key, points=points))
    return api.MetricsResponse(
        city=city.slug,
        interval=interval,
        timezone=city.timezone,
        group_by=group_by,
        series=series,
    )


def _local_hour(day: date, hour: int, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=zone)


def _hours(start: Start, interval: Interval, zone: ZoneInfo) -> float:
    if interval == "hour" or isinstance(start, datetime):
        return 1.0
    return metrics.hours_between(start, metrics.next_start(start, interval), zone)


def _point(
    start: Start, value: metrics.Value, events: int, reporting: int, active: int
) -> api.Point:
    return api.Point(
        start=start,
        # Ratios of integer sums: 9 decimals keep every digit the inputs had.
        value=None if value.value is None else round(value.value, 9),
        state=value.state,
        reason=value.reason,
        terms=list(value.terms) if value.terms is not None else None,
        range=[round(v, 9) for v in value.range] if value.range is not None else None,
        coverage=api.Coverage(events=events, sites_reporting=reporting, sites_active=active),
    )


def _cells(
    session: Session, city_id: int, first: date, last: date, interval: Interval, start_of: Any
) -> dict[Start, list[Cell]]:
    table: type[FlowRollup] | type[FlowRollupHour] = (
        FlowRollupHour if interval == "hour" else FlowRollup
    )
    hour = FlowRollupHour.hour if interval == "hour" else None
    rows = session.execute(
        select(
            table,
            Site.slug,
            Device.slug,
            Resource.dimension,
            Resource.mfa_category,
            *([hour] if hour is not None else []),
        )
        .join(Site, Site.id == table.site_id)
        .outerjoin(Device, Device.id == table.device_id)
        .join(Resource, Resource.name == table.resource)
        .where(table.city_id == city_id, table.day.between(first, last))
    ).all()
    cells: dict[Start, list[Cell]] = defaultdict(list)
    for row in rows:
        r: Any = row[0]
        start = start_of(r.day, row[5] if hour is not None else 0)
        cells[start].append(
            Cell(
                start,
                row[1],
                row[2] or "",
                r.action,
                r.resource,
                row[3],
                row[4],
                r.ring,
                r.fate,
                r.recycled,
                r.design,
                r.state,
                r.amount,
                r.design_mass,
                r.design_mass_flows,
                r.flows,
            )
        )
    return cells


def _coverage(
    session: Session, city_id: int, first: date, last: date, start_of: Any
) -> dict[Start, tuple[int, int]]:
    events: dict[Start, int] = defaultdict(int)
    sites: dict[Start, set[int]] = defaultdict(set)
    for day, hour, site_id, count in session.execute(
        select(
            SiteActivity.day, SiteActivity.hour, SiteActivity.site_id, SiteActivity.events
        ).where(SiteActivity.city_id == city_id, SiteActivity.day.between(first, last))
    ):
        start = start_of(day, hour)
        events[start] += count
        sites[start].add(site_id)
    return {s: (events[s], len(sites[s])) for s in events}
