"""Reading metrics. Reads rollups only; never scans raw events on a request path."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabcity import metrics, registry
from fabcity.errors import Invalid
from fabcity.metrics import Cell, GroupBy, Interval
from fabcity.models import FlowRollup, Resource, Site, SiteActivity
from schemas import api

MAX_WINDOWS = 1000
DEFAULT_DAYS = 30


def parse_names(names: str | None) -> list[str]:
    wanted = [n.strip() for n in (names or "").split(",") if n.strip()] or list(metrics.METRICS)
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
    city = registry.get_city(session, city_slug)
    last = last or today_in(city.timezone)
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise Invalid(f"`from` ({first}) is after `to` ({last})")
    starts = metrics.window_starts(first, last, interval)
    if len(starts) > MAX_WINDOWS:
        raise Invalid(f"{len(starts)} windows asked; at most {MAX_WINDOWS}: widen the interval")

    rows = session.execute(
        select(FlowRollup, Site.slug, Resource.dimension, Resource.mfa_category)
        .join(Site, Site.id == FlowRollup.site_id)
        .join(Resource, Resource.name == FlowRollup.resource)
        .where(FlowRollup.city_id == city.id, FlowRollup.day.between(first, last))
    ).all()
    cells: dict[date, list[Cell]] = defaultdict(list)
    for r, site, dimension, category in rows:
        cells[metrics.window_start(r.day, interval)].append(
            Cell(
                r.day,
                site,
                r.action,
                r.resource,
                dimension,
                category,
                r.ring,
                r.fate,
                r.recycled,
                r.with_design,
                r.state,
                r.quantity,
                r.flows,
            )
        )

    events: dict[date, int] = defaultdict(int)
    reporting: dict[date, set[int]] = defaultdict(set)
    for day, site_id, count in session.execute(
        select(SiteActivity.day, SiteActivity.site_id, SiteActivity.events).where(
            SiteActivity.city_id == city.id, SiteActivity.day.between(first, last)
        )
    ):
        start = metrics.window_start(day, interval)
        events[start] += count
        reporting[start].add(site_id)
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
                value = metric.compute(window)
                if value.value is None and not events.get(start):
                    value = metrics.Value(None, None, "no events in this window")
                points.append(
                    api.Point(
                        start=start,
                        # Sums of floats carry noise in the last bits; no input is finer.
                        value=None if value.value is None else round(value.value, 9),
                        state=value.state,
                        reason=value.reason,
                        coverage=api.Coverage(
                            events=events.get(start, 0),
                            sites_reporting=len(reporting.get(start, ())),
                            sites_active=active,
                        ),
                    )
                )
            series.append(api.Series(name=name, unit=metric.unit, key=key, points=points))
    return api.MetricsResponse(
        city=city.slug,
        interval=interval,
        timezone=city.timezone,
        group_by=group_by,
        series=series,
    )
