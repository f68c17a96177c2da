"""The read side for planners: metric series, a period's summary, comparisons, material flows
and NGSI-LD, each as JSON with an ETag, and (but NGSI-LD) as streamed CSV."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import anyio
import orjson
import xxhash
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core import calendar, models
from fabcity.core.calendar import Interval
from fabcity.core.db import transaction
from fabcity.core.errors import Invalid
from fabcity.core.models import MICRO
from fabcity.read import exports, freshness, queries, sankey, summary
from fabcity.read import series as fast
from fabcity.read.metrics import GroupBy
from fabcity.registry import entries
from schemas import api, reports
from services.http.dependencies import AppStateDep, SessionDep

router = APIRouter(prefix="/v1", tags=["metrics"])

Body = TypeVar("Body", bound=BaseModel)
Names = Annotated[
    str | None, Query(description="Comma-separated metric names; a default set when absent.")
]
From = Annotated[date | None, Query(alias="from", description="First day (inclusive), city time.")]
To = Annotated[date | None, Query(description="Last day (inclusive); today if absent.")]
SiteOnly = Annotated[
    str | None,
    Query(max_length=64, description="One site's slug: its figures only, e.g. `site=fablab`."),
]
Format = Annotated[
    Literal["json", "csv"] | None,
    Query(description="`csv` for a CSV export; the Accept header `text/csv` does the same."),
]

# Rollups change as events arrive: a client may reuse an answer briefly, then revalidates it
# with If-None-Match (a 304 costs no body). `private`: planners' answers may need a key.
CACHE_CONTROL = "private, max-age=30, must-revalidate"
CSV_TYPE = "text/csv; charset=utf-8"
LD_JSON = "application/ld+json"
EXPORTS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or CSV when asked for."},
    304: {"description": "Not modified: the ETag given in If-None-Match still holds."},
}


def wants_csv(request: Request, format: str | None) -> bool:
    """`format` wins; else the Accept header, when it prefers text/csv to JSON."""
    if format is not None:
        return format == "csv"
    quality: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = q
    return quality.get("text/csv", 0.0) > quality.get("application/json", 0.0)


def cached(request: Request, body: bytes, media_type: str = "application/json") -> Response:
    """The body with a weak ETag of its bytes; 304 when the client holds it already.

    The tag is XXH3's 128 bits, not a cryptographic hash: it tells a client's copy from the
    current one, and a writer who wanted a stale copy kept would have to steer a whole answer,
    sums of many labs' events, onto the hash of an earlier one. A year by day by site is
    5.8 MB: blake2b took 6 ms of it, XXH3 0.3 ms."""
    etag = f'W/"{xxhash.xxh3_128_hexdigest(body)}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept"}
    held = request.headers.get("if-none-match", "")
    # Weak comparison (RFC 9110 §13.1.2): W/ prefixes do not matter.
    if any(tag.strip().removeprefix("W/") == etag[2:] for tag in held.split(",")) or held == "*":
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def json_of(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump(mode="json", by_alias=True))


def _next_block(blocks: Iterator[str]) -> str | None:
    return next(blocks, None)


async def _in_lane(blocks: Iterator[str], lane: anyio.CapacityLimiter) -> AsyncIterator[str]:
    """Each block made in a thread of the export lane, never of the shared threadpool.

    A streamed export reads the database span after span for as long as it lasts. In the
    shared threadpool (Starlette's default for a sync body), 45 exports held every thread and
    every other request, `POST /v1/events` with them, queued behind them for seconds. In their
    own lane exports wait for each other, and nothing else waits for them."""
    while (block := await anyio.to_thread.run_sync(_next_block, blocks, limiter=lane)) is not None:
        yield block


def csv_stream(
    lane: anyio.CapacityLimiter, columns: list[str], rows: Iterator[list[object]], filename: str
) -> StreamingResponse:
    """A CSV body produced as it is read, in blocks made in the export lane."""

    def lines() -> Iterator[str]:
        yield from exports.csv_lines([columns])
        yield from exports.csv_lines(rows)

    return StreamingResponse(
        _in_lane(exports.blocks(lines()), lane),
        media_type=CSV_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}.csv"',
            "Cache-Control": CACHE_CONTROL,
            "Vary": "Accept",
        },
    )


@dataclass(frozen=True)
class Period:
    """The days a read asks for; either end may be left to the defaults."""

    first: date | None
    last: date | None


@dataclass(frozen=True)
class Series(Period):
    """A period and the metrics asked for, as given: `wanted` parses them once every parameter
    has passed validation, so that a bad parameter is reported as such first."""

    names: str | None

    def wanted(self) -> list[str]:
        return queries.parse_names(self.names)


# `async`: these only read parameters, so they need not take a worker thread.


async def period(from_: From = None, to: To = None) -> Period:
    return Period(from_, to)


PeriodDep = Annotated[Period, Depends(period)]


async def series(asked: PeriodDep, names: Names = None) -> Series:
    return Series(asked.first, asked.last, names)


SeriesDep = Annotated[Series, Depends(series)]


def exported(
    request: Request,
    lane: anyio.CapacityLimiter,
    format: str | None,
    body: Body,
    columns: list[str],
    rows: Callable[[Body], Iterator[list[object]]],
    filename: str,
) -> Response:
    """A report as CSV when asked for, else as JSON with its ETag."""
    if wants_csv(request, format):
        return csv_stream(lane, columns, rows(body), filename)
    return cached(request, json_of(body))


def _series_rows(
    factory: sessionmaker[Session],
    city: str,
    names: list[str],
    spans: list[tuple[date, date]],
    interval: Interval,
    group_by: GroupBy | None,
    site: str | None = None,
) -> Iterator[list[object]]:
    """Rows of a long series (`spans` from `queries.chunks`, found before the response
    starts, so a period refused is a problem, not a CSV cut short): read a span of windows at
    a time, never all at once.

    Each read is its own transaction, not the request's session: the rows are read while the
    response streams, after the request's session has been committed and closed."""
    for a, b in spans:
        with transaction(factory) as s:
            chunk = queries.metric_series(s, city, names, a, b, interval, group_by, site=site)
        yield from exports.metric_rows(chunk)


@router.get("/cities/{city}/metrics", response_model=api.MetricsResponse, responses=EXPORTS)
def city_metrics(
    city: str,
    request: Request,
    s: SessionDep,
    state: AppStateDep,
    asked: SeriesDep,
    interval: Interval = "day",
    group_by: GroupBy | None = None,
    site: SiteOnly = None,
    format: Format = None,
) -> Response:
    """Metric series per window. A value not recorded is null with a reason, never 0. Each
    value carries its `confidence`, DIDO and FCI a `range` where terms are not recorded, and
    a window not over yet is `partial`. `site` narrows them to one site (drilling down from
    the city); with `group_by=device`, to that site's devices, each keyed by its slug
    (across the city's sites, by `site/device`: two sites may each have a "printer")."""
    wanted = asked.wanted()
    if wants_csv(request, format):
        # The city, site and period now: an unknown one is a 404, not a CSV cut short.
        spans = queries.chunks(s, city, asked.first, asked.last, interval)
        if site is not None:
            entries.get_site(s, entries.get_city(s, city), site)
        rows = _series_rows(state.factory, city, wanted, spans, interval, group_by, site)
        name = f"{city}-{site}-metrics" if site else f"{city}-metrics"
        return csv_stream(state.exports, exports.METRIC_COLUMNS, rows, name)
    # The JSON of `api.MetricsResponse`, written without building it (`fabcity.read.series`):
    # a year by day by site is 29,200 points. `response_model` above documents it.
    body = fast.series_json(s, city, wanted, asked.first, asked.last, interval, group_by, site=site)
    return cached(request, body)


@router.get("/cities/{city}/summary", response_model=reports.Summary, responses=EXPORTS)
def city_summary(
    city: str,
    request: Request,
    s: SessionDep,
    state: AppStateDep,
    asked: PeriodDep,
    format: Format = None,
) -> Response:
    """The headline figures of a period (the last 30 days when absent), each over the whole
    period, with their state; and the material accounts by MFA category."""
    # The figures are the city's: none tells sites apart (tests/fabcity/read/test_summary.py).
    period = queries.read_period(s, city, asked.first, asked.last, city_level=True)
    body = summary.summarise(period)
    columns = exports.SUMMARY_COLUMNS
    rows = exports.summary_rows
    return exported(request, state.exports, format, body, columns, rows, f"{city}-summary")


@router.get("/cities/{city}/breakdown", response_model=reports.Breakdown, responses=EXPORTS)
def city_breakdown(
    city: str,
    request: Request,
    s: SessionDep,
    state: AppStateDep,
    asked: SeriesDep,
    group_by: GroupBy | None = None,
    format: Format = None,
) -> Response:
    """Metrics of a period (the last 30 days when absent), each over the whole period, for
    each site, device, resource, ring or MFA category (`group_by`) the period's flows tell
    apart: one value a part where a day series by site would give one a day. Each value has
    its state, its reason when not recorded, and its confidence from the period's coverage."""
    wanted = asked.wanted()
    city_level = not queries.reads_sites(wanted, group_by)
    found = queries.read_period(s, city, asked.first, asked.last, city_level=city_level)
    body = summary.breakdown(found, wanted, group_by)
    columns, rows = exports.BREAKDOWN_COLUMNS, exports.breakdown_rows
    return exported(request, state.exports, format, body, columns, rows, f"{city}-breakdown")


def _flows(s: Session, city: str, asked: Period) -> reports.Flows:
    # From the sites' cubes, not the city's: a cell of things made counts as weighed by its
    # modelled mass or not at all (`sankey.build`), and the city's would merge a site's
    # modelled cell with another's unmodelled one of the same kind.
    found = queries.read_period(s, city, asked.first, asked.last)
    diagram = sankey.build(found.cells)
    return reports.Flows(
        city=found.city.slug,
        from_=found.first,
        to=found.last,
        nodes=[reports.SankeyNode(id=n.id, label=n.label, kind=n.kind) for n in diagram.nodes],
        links=[
            reports.SankeyLink(
                source=link.source,
                target=link.target,
                value=round(link.amount / MICRO, 6),
                state=link.state,
            )
            for link in diagram.links
        ],
        unweighed_count=diagram.unweighed / MICRO,
    )


@router.get("/cities/{city}/flows", response_model=reports.Flows, responses=EXPORTS)
def city_flows(
    city: str,
    request: Request,
    s: SessionDep,
    state: AppStateDep,
    asked: PeriodDep,
    format: Format = None,
) -> Response:
    """Material flows of a period for a Sankey diagram, in kg. Every node balances: what comes
    in goes out, to products, waste, recovered material or the city's stock."""
    body = _flows(s, city, asked)
    columns, rows = exports.FLOW_COLUMNS, exports.flow_rows
    return exported(request, state.exports, format, body, columns, rows, f"{city}-flows")


@router.get("/compare", response_model=reports.Comparison, responses=EXPORTS)
def compare(
    request: Request,
    s: SessionDep,
    state: AppStateDep,
    cities: Annotated[str, Query(description="Comma-separated city slugs, e.g. `a,b`.")],
    asked: SeriesDep,
    interval: Interval = "month",
    format: Format = None,
) -> Response:
    """The same metrics of several cities side by side, each in its own time zone."""
    wanted = asked.wanted()
    slugs = list(dict.fromkeys(c.strip() for c in cities.split(",") if c.strip()))
    if not slugs:
        raise Invalid("`cities` names no city; e.g. cities=barcelona,amsterdam")
    if len(slugs) > 20:
        raise Invalid(f"{len(slugs)} cities asked; compare at most 20 at once")
    # An unknown city is a 404, found by `chunks` or `compare_json` (in the order asked).
    if wants_csv(request, format):
        spans = {c: queries.chunks(s, c, asked.first, asked.last, interval) for c in slugs}

        def rows() -> Iterator[list[object]]:
            for slug in slugs:
                yield from _series_rows(state.factory, slug, wanted, spans[slug], interval, None)

        return csv_stream(state.exports, exports.METRIC_COLUMNS, rows(), "compare")

    # The JSON of `reports.Comparison`, written without building it (`fabcity.read.series`).
    body = fast.compare_json(s, slugs, wanted, asked.first, asked.last, interval)
    return cached(request, body)


@router.get(
    "/cities/{city}/ngsi-ld",
    responses={200: {"content": {LD_JSON: {}}}, 304: EXPORTS[304]},
)
def city_ngsi_ld(
    city: str,
    request: Request,
    s: SessionDep,
    asked: SeriesDep,
    interval: Interval = "month",
    options: Annotated[
        Literal["keyValues"] | None,
        Query(description="`keyValues` for the simplified representation."),
    ] = None,
) -> Response:
    """The city's figures as NGSI-LD `KeyPerformanceIndicator` entities (FIWARE Smart Data
    Models), one per metric and window, for a context broker. Values not recorded have none."""
    wanted = asked.wanted()
    response = queries.metric_series(s, city, wanted, asked.first, asked.last, interval, None)
    found = entries.get_city(s, city)
    location = exports.places(entries.site_coordinates(s, found.id))
    modified = _modified(s, found, response)
    entities = exports.kpi_entities(
        response, found.name, options == "keyValues", location, modified
    )
    return cached(request, orjson.dumps(entities), LD_JSON)


def _modified(
    s: Session, city: models.City, response: api.MetricsResponse
) -> dict[date | datetime, datetime]:
    """When the figures of each window last changed, by window start (`dateModified`)."""
    starts = {p.start for series in response.series for p in series.points}
    if not starts:
        return {}
    zone, interval = ZoneInfo(city.timezone), response.interval
    days = [st.astimezone(zone).date() if isinstance(st, datetime) else st for st in starts]
    # A window is read whole (see `queries.metric_series`): so is what changed it.
    last = max(calendar.next_start(d, interval) for d in days) - timedelta(days=1)
    changes = freshness.last_changes(s, city.id, min(days), last, interval == "hour")
    found = {st: freshness.window_modified(changes, st, interval, zone) for st in starts}
    return {st: when for st, when in found.items() if when is not None}
