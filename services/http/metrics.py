"""The read side for planners: metric series, a period's summary, comparisons, material flows
and NGSI-LD, each as JSON with an ETag, and (but NGSI-LD) as streamed CSV."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import date
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from fabcity.core import pagination
from fabcity.core.calendar import Interval
from fabcity.core.db import transaction
from fabcity.core.errors import Invalid
from fabcity.core.models import MICRO
from fabcity.read import exports, queries, sankey, summary
from fabcity.read.metrics import GroupBy
from fabcity.registry import entries
from schemas import api, reports
from services.http.dependencies import Context, context
from services.http.registry import device_body

router = APIRouter(prefix="/v1")

Ctx = Annotated[Context, Depends(context)]
T = TypeVar("T")
Names = Annotated[
    str | None, Query(description="Comma-separated metric names; a default set when absent.")
]
From = Annotated[date | None, Query(alias="from", description="First day (inclusive), city time.")]
To = Annotated[date | None, Query(description="Last day (inclusive); today if absent.")]
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
    """The body with a weak ETag of its bytes; 304 when the client holds it already."""
    etag = f'W/"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept"}
    held = request.headers.get("if-none-match", "")
    # Weak comparison (RFC 9110 §13.1.2): W/ prefixes do not matter.
    if any(tag.strip().removeprefix("W/") == etag[2:] for tag in held.split(",")) or held == "*":
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def json_of(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump(mode="json", by_alias=True))


def csv_stream(
    columns: list[str], rows: Iterator[list[object]], filename: str
) -> StreamingResponse:
    """A CSV body produced as it is read: a sync generator runs in Starlette's threadpool."""

    def lines() -> Iterator[str]:
        yield from exports.csv_lines([columns])
        yield from exports.csv_lines(rows)

    return StreamingResponse(
        lines(),
        media_type=CSV_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}.csv"',
            "Cache-Control": CACHE_CONTROL,
            "Vary": "Accept",
        },
    )


def _read(ctx: Context, read: Callable[[Session], T]) -> T:
    with transaction(ctx.factory) as s:
        return read(s)


def _series(
    ctx: Context,
    city: str,
    names: list[str],
    first: date | None,
    last: date | None,
    interval: Interval,
    group_by: GroupBy | None,
) -> api.MetricsResponse:
    with transaction(ctx.factory) as s:
        return queries.metric_series(s, city, names, first, last, interval, group_by)


def _series_rows(
    ctx: Context,
    city: str,
    names: list[str],
    first: date | None,
    last: date | None,
    interval: Interval,
    group_by: GroupBy | None,
) -> Iterator[list[object]]:
    """Rows of a series of any length: read a chunk of windows at a time, never all at once."""
    spans = _read(ctx, lambda s: queries.chunks(s, city, first, last, interval))
    for a, b in spans:
        yield from exports.metric_rows(_series(ctx, city, names, a, b, interval, group_by))


@router.get(
    "/cities/{city}/metrics",
    response_model=api.MetricsResponse,
    responses=EXPORTS,
    tags=["metrics"],
)
async def city_metrics(
    city: str,
    request: Request,
    ctx: Ctx,
    names: Names = None,
    from_: From = None,
    to: To = None,
    interval: Interval = "day",
    group_by: GroupBy | None = None,
    format: Format = None,
) -> Response:
    """Metric series per window. A value not recorded is null with a reason, never 0."""
    wanted = queries.parse_names(names)
    if wants_csv(request, format):
        # Resolve the city now: an unknown one is a 404, not a CSV cut short.
        await run_in_threadpool(_read, ctx, lambda s: entries.get_city(s, city))
        rows = _series_rows(ctx, city, wanted, from_, to, interval, group_by)
        return csv_stream(exports.METRIC_COLUMNS, rows, f"{city}-metrics")

    def read() -> bytes:
        return json_of(
            _read(
                ctx,
                lambda s: queries.metric_series(s, city, wanted, from_, to, interval, group_by),
            )
        )

    return cached(request, await run_in_threadpool(read))


def _summary(ctx: Context, city: str, first: date | None, last: date | None) -> reports.Summary:
    body: reports.Summary = _read(
        ctx, lambda s: summary.summarise(queries.read_period(s, city, first, last))
    )
    return body


@router.get(
    "/cities/{city}/summary",
    response_model=reports.Summary,
    responses=EXPORTS,
    tags=["metrics"],
)
async def city_summary(
    city: str, request: Request, ctx: Ctx, from_: From = None, to: To = None, format: Format = None
) -> Response:
    """The headline figures of a period (the last 30 days when absent), each over the whole
    period, with their state; and the material accounts by MFA category."""
    body = await run_in_threadpool(_summary, ctx, city, from_, to)
    if wants_csv(request, format):
        return csv_stream(exports.SUMMARY_COLUMNS, exports.summary_rows(body), f"{city}-summary")
    return cached(request, json_of(body))


def _flows(ctx: Context, city: str, first: date | None, last: date | None) -> reports.Flows:
    def read(s: Session) -> reports.Flows:
        period = queries.read_period(s, city, first, last)
        diagram = sankey.build(period.cells)
        return reports.Flows(
            city=period.city.slug,
            from_=period.first,
            to=period.last,
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

    body: reports.Flows = _read(ctx, read)
    return body


@router.get(
    "/cities/{city}/flows", response_model=reports.Flows, responses=EXPORTS, tags=["metrics"]
)
async def city_flows(
    city: str, request: Request, ctx: Ctx, from_: From = None, to: To = None, format: Format = None
) -> Response:
    """Material flows of a period for a Sankey diagram, in kg. Every node balances: what comes
    in goes out, to products, waste, recovered material or the city's stock."""
    body = await run_in_threadpool(_flows, ctx, city, from_, to)
    if wants_csv(request, format):
        return csv_stream(exports.FLOW_COLUMNS, exports.flow_rows(body), f"{city}-flows")
    return cached(request, json_of(body))


@router.get("/compare", response_model=reports.Comparison, responses=EXPORTS, tags=["metrics"])
async def compare(
    request: Request,
    ctx: Ctx,
    cities: Annotated[str, Query(description="Comma-separated city slugs, e.g. `a,b`.")],
    names: Names = None,
    from_: From = None,
    to: To = None,
    interval: Interval = "month",
    format: Format = None,
) -> Response:
    """The same metrics of several cities side by side, each in its own time zone."""
    wanted = queries.parse_names(names)
    slugs = list(dict.fromkeys(c.strip() for c in cities.split(",") if c.strip()))
    if not slugs:
        raise Invalid("`cities` names no city; e.g. cities=barcelona,amsterdam")
    if len(slugs) > 20:
        raise Invalid(f"{len(slugs)} cities asked; compare at most 20 at once")
    for slug in slugs:
        await run_in_threadpool(_read, ctx, partial(entries.get_city, slug=slug))
    if wants_csv(request, format):

        def rows() -> Iterator[list[object]]:
            for slug in slugs:
                yield from _series_rows(ctx, slug, wanted, from_, to, interval, None)

        return csv_stream(exports.METRIC_COLUMNS, rows(), "compare")

    def read() -> bytes:
        series = [_series(ctx, c, wanted, from_, to, interval, None) for c in slugs]
        body = reports.Comparison(
            names=wanted, interval=interval, from_=from_, to=to, cities=series
        )
        return json_of(body)

    return cached(request, await run_in_threadpool(read))


@router.get(
    "/cities/{city}/ngsi-ld",
    responses={200: {"content": {LD_JSON: {}}}, 304: EXPORTS[304]},
    tags=["metrics"],
)
async def city_ngsi_ld(
    city: str,
    request: Request,
    ctx: Ctx,
    names: Names = None,
    from_: From = None,
    to: To = None,
    interval: Interval = "month",
    options: Annotated[
        Literal["keyValues"] | None,
        Query(description="`keyValues` for the simplified representation."),
    ] = None,
) -> Response:
    """The city's figures as NGSI-LD `KeyPerformanceIndicator` entities (FIWARE Smart Data
    Models), one per metric and window, for a context broker. Values not recorded have none."""
    wanted = queries.parse_names(names)

    def read(s: Session) -> bytes:
        response = queries.metric_series(s, city, wanted, from_, to, interval, None)
        organization = entries.get_city(s, city).name
        entities = exports.kpi_entities(response, organization, options == "keyValues")
        return orjson.dumps(entities)

    return cached(request, await run_in_threadpool(_read, ctx, read), LD_JSON)


Limit = Annotated[int, Query(ge=1, le=pagination.MAX_LIMIT)]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


@router.get("/cities/{city}/devices", response_model=reports.Page[api.Device], tags=["registry"])
def city_devices(
    city: str, ctx: Ctx, limit: Limit = pagination.DEFAULT_LIMIT, cursor: Cursor = None
) -> reports.Page[api.Device]:
    """Every device of a city with its online status and when it was last heard from."""
    after = pagination.decode(cursor, 2)
    with transaction(ctx.factory) as s:
        c = entries.get_city(s, city)
        found = entries.city_devices(s, c, (after[0], after[1]) if after else None, limit + 1)
        items = [device_body(d, c.slug, site) for site, d in found[:limit]]
        last = found[limit - 1] if len(found) > limit else None
        return reports.Page(
            items=items,
            next_cursor=pagination.encode([last[0], last[1].slug]) if last else None,
        )
