"""What the read side exports: CSV rows and NGSI-LD `KeyPerformanceIndicator` entities.

CSV is produced row by row so a response can be streamed whatever its length. NGSI-LD follows
the FIWARE Smart Data Model `dataModel.KeyPerformanceIndicator`, one entity per metric and
window; a value that is not recorded has no entity (NGSI-LD has no null, and 0 would be false).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fabcity.core import calendar
from fabcity.core.calendar import Interval
from fabcity.read import metrics
from schemas import api, reports

METRIC_COLUMNS = [
    "city",
    "name",
    "unit",
    "key",
    "start",
    "value",
    "state",
    "reason",
    "range_from",
    "range_to",
    "events",
    "sites_reporting",
    "sites_active",
    "confidence",
    "partial",
]
SUMMARY_COLUMNS = [
    "city",
    "from",
    "to",
    "section",
    "category",
    "name",
    "label",
    "unit",
    "value",
    "state",
    "reason",
    "range_from",
    "range_to",
    "confidence",
    "partial",
]
# A part's value says what a point's does, its coverage the period's.
BREAKDOWN_COLUMNS = [
    "city",
    "from",
    "to",
    "group_by",
    "key",
    "name",
    "unit",
    *METRIC_COLUMNS[METRIC_COLUMNS.index("value") :],
]
FLOW_COLUMNS = [
    "city",
    "from",
    "to",
    "source",
    "source_label",
    "target",
    "target_label",
    "value_kg",
    "state",
]

NGSI_LD_CONTEXT = [
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.KeyPerformanceIndicator/"
    "master/context.jsonld",
]
FREQUENCY = {"hour": "hourly", "day": "daily", "week": "weekly", "month": "monthly",
             "year": "yearly"}  # fmt: skip
# UN/CEFACT common codes, as NGSI-LD `unitCode` expects.
UNIT_CODES = {"kg": "KGM", "kWh": "KWH", "h": "HUR", "count": "C62", "ratio": "C62"}


def csv_lines(rows: Iterable[Iterable[object]]) -> Iterator[str]:
    """Each row as one CSV line (RFC 4180 quoting); None is an empty field, never 0."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def blocks(lines: Iterable[str], size: int = 64 * 1024) -> Iterator[str]:
    """The lines joined into blocks of about `size` characters: a streamed response pays its
    per-chunk cost (a thread hop, a write) once a block rather than once a line."""
    block: list[str] = []
    held = 0
    for line in lines:
        block.append(line)
        held += len(line)
        if held >= size:
            yield "".join(block)
            block, held = [], 0
    if block:
        yield "".join(block)


def _range(r: list[float] | None) -> list[float | None]:
    return [r[0], r[1]] if r else [None, None]


def _flag(partial: bool) -> str:
    """As JSON writes it: a spreadsheet reads `true`/`false`, Python's `True` is an accident."""
    return "true" if partial else "false"


def metric_rows(response: api.MetricsResponse) -> Iterator[list[object]]:
    """One row per point; no header (a streamed export writes it once)."""
    for s in response.series:
        for p in s.points:
            c = p.coverage
            yield [response.city, s.name, s.unit, s.key, p.start.isoformat(), p.value, p.state,
                   p.reason, *_range(p.range), c.events, c.sites_reporting,
                   c.sites_active, p.confidence, _flag(p.partial)]  # fmt: skip


def summary_rows(summary: reports.Summary) -> Iterator[list[object]]:
    period = [summary.city, summary.from_.isoformat(), summary.to.isoformat()]
    partial = _flag(summary.partial)
    for f in summary.figures:
        section = "headline" if f.headline else "figure"
        yield [*period, section, None, f.name, f.label, f.unit, f.value, f.state, f.reason,
               *_range(f.range), f.confidence, partial]  # fmt: skip
    for account in summary.accounts:
        for f in (account.de, account.imp, account.exp, account.dmc, account.u):
            yield [*period, "account", account.category, f.name, f.label, f.unit, f.value,
                   f.state, f.reason, None, None, f.confidence, partial]  # fmt: skip


def breakdown_rows(found: reports.Breakdown) -> Iterator[list[object]]:
    period = [found.city, found.from_.isoformat(), found.to.isoformat(), found.group_by]
    c, partial = found.coverage, _flag(found.partial)
    for p in found.parts:
        yield [*period, p.key, p.name, p.unit, p.value, p.state, p.reason, *_range(p.range),
               c.events, c.sites_reporting, c.sites_active, p.confidence, partial]  # fmt: skip


def flow_rows(flows: reports.Flows) -> Iterator[list[object]]:
    labels = {n.id: n.label for n in flows.nodes}
    period = [flows.city, flows.from_.isoformat(), flows.to.isoformat()]
    for link in flows.links:
        yield [*period, link.source, labels[link.source], link.target, labels[link.target],
               link.value, link.state]  # fmt: skip


def period_id(start: date | datetime, interval: Interval) -> str:
    """The window in an entity id: 2026-03-10, 2026-W11, 2026-03, 2026, 2026-03-10T10:00+01:00.
    An hour's carries its offset: the two passes of an hour the clock repeats are two
    windows, 2026-10-25T02:00+02:00 and 2026-10-25T02:00+01:00 in Madrid."""
    if isinstance(start, datetime):
        return start.isoformat(timespec="minutes")
    if interval == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if interval == "month":
        return start.strftime("%Y-%m")
    if interval == "year":
        return str(start.year)
    return start.isoformat()


def calculation_period(start: date | datetime, interval: Interval) -> dict[str, str]:
    """Inclusive days, as the data model's `format: date` has them. An hour lies within one
    local day, so its period is that day; the hour itself is in the id and in `observedAt`."""
    if isinstance(start, datetime):
        day = start.date().isoformat()
        return {"from": day, "to": day}
    last = calendar.next_start(start, interval) - timedelta(days=1)
    return {"from": start.isoformat(), "to": last.isoformat()}


def observed_at(start: date | datetime, timezone: str) -> str:
    """The window's start as an NGSI-LD DateTime (UTC): a point is stamped by its window's
    start here as everywhere in the API (the id, `start`, `calculationPeriod.from`)."""
    if not isinstance(start, datetime):
        start = datetime.combine(start, time(), ZoneInfo(timezone))
    return utc_text(start)


def utc_text(instant: datetime) -> str:
    """An aware instant as an NGSI-LD DateTime: UTC, `Z`."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def places(coordinates: Sequence[tuple[float, float]]) -> dict[str, Any] | None:
    """Where a city's figures are measured, as GeoJSON: its sites' (latitude, longitude), a
    Point for one and a MultiPoint for several; None when no site has coordinates (a city
    has none of its own, and a made-up centre would mislead a geo-query)."""
    points = sorted({(round(lon, 7), round(lat, 7)) for lat, lon in coordinates})
    if not points:
        return None
    if len(points) == 1:
        return {"type": "Point", "coordinates": list(points[0])}
    return {"type": "MultiPoint", "coordinates": [list(p) for p in points]}


def kpi_entities(
    response: api.MetricsResponse,
    organization: str,
    key_values: bool = False,
    location: dict[str, Any] | None = None,
    modified: Mapping[date | datetime, datetime] | None = None,
) -> list[dict[str, Any]]:
    """NGSI-LD entities (normalised, or key-values) of every recorded point. `organization`
    is the city's name, and the area it serves; `location` is GeoJSON (see `places`);
    `modified`, by window start, when the figures of that window last changed (see
    `freshness`), which becomes `dateModified`."""
    entities = []
    for s in response.series:
        metric = metrics.METRICS[s.name]
        for p in s.points:
            if p.value is None:
                continue
            attributes: dict[str, Any] = {
                "name": s.name,
                "description": f"{metric.description} ({s.unit})",
                "category": ["quantitative"],
                "calculationFrequency": FREQUENCY[response.interval],
                "calculationPeriod": calculation_period(p.start, response.interval),
                "calculationMethod": "automatic",
                "organization": organization,
                "areaServed": organization,
                "kpiValue": p.value,
                # Not in the data model: how sure the value is (measured, reported, modelled),
                # how far it can be trusted, and whether its window is over yet.
                "valueState": p.state,
                "confidence": p.confidence,
                "partial": p.partial,
            }
            entity: dict[str, Any] = {
                "id": "urn:ngsi-ld:KeyPerformanceIndicator:"
                f"{response.city}:{s.name}:{period_id(p.start, response.interval)}",
                "type": "KeyPerformanceIndicator",
            }
            if location is not None:
                attributes["location"] = location
            changed = (modified or {}).get(p.start)
            if key_values:
                entity.update(attributes)
                if changed is not None:
                    entity["dateModified"] = utc_text(changed)
            else:
                for name, value in attributes.items():
                    kind = "GeoProperty" if name == "location" else "Property"
                    entity[name] = {"type": kind, "value": value}
                if changed is not None:
                    # A typed value, as the Smart Data Models' normalised examples write it.
                    entity["dateModified"] = {
                        "type": "Property",
                        "value": {"@type": "DateTime", "@value": utc_text(changed)},
                    }
                # When the value holds: a key-values entity has no sub-attributes to say it.
                entity["kpiValue"]["observedAt"] = observed_at(p.start, response.timezone)
                if s.unit in UNIT_CODES:
                    entity["kpiValue"]["unitCode"] = UNIT_CODES[s.unit]
            entity["@context"] = NGSI_LD_CONTEXT
            entities.append(entity)
    return entities
