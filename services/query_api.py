"""The query API: the registry and the city metrics, read from rollups."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from fabcity import models, queries, registry
from fabcity.db import transaction
from fabcity.metrics import GroupBy, Interval
from schemas import api
from services.deps import Context, context

router = APIRouter(prefix="/v1")

Ctx = Annotated[Context, Depends(context)]


@router.get("/cities", response_model=list[api.City], tags=["registry"])
def list_cities(ctx: Ctx) -> list[api.City]:
    with transaction(ctx.factory) as s:
        return [api.City.model_validate(c) for c in registry.list_cities(s)]


@router.post("/cities", response_model=api.City, status_code=201, tags=["registry"])
def create_city(body: api.CityIn, ctx: Ctx) -> api.City:
    with transaction(ctx.factory) as s:
        return api.City.model_validate(registry.create_city(s, body))


@router.get("/cities/{city}", response_model=api.City, tags=["registry"])
def get_city(city: str, ctx: Ctx) -> api.City:
    with transaction(ctx.factory) as s:
        return api.City.model_validate(registry.get_city(s, city))


def _site(site: models.Site, city: str) -> api.Site:
    return api.Site.model_validate({**_fields(site, api.SiteIn), "city": city})


def _device(device: models.Device, city: str, site: str) -> api.Device:
    return api.Device.model_validate(
        {
            **_fields(device, api.DeviceIn),
            "city": city,
            "site": site,
            "online": device.online,
            "last_seen": device.last_seen,
        }
    )


def _fields(row: object, model: type[BaseModel]) -> dict[str, object]:
    return {name: getattr(row, name) for name in model.model_fields}


@router.get("/cities/{city}/sites", response_model=list[api.Site], tags=["registry"])
def list_sites(city: str, ctx: Ctx) -> list[api.Site]:
    with transaction(ctx.factory) as s:
        c = registry.get_city(s, city)
        return [_site(site, c.slug) for site in registry.list_sites(s, c)]


@router.post("/cities/{city}/sites", response_model=api.Site, status_code=201, tags=["registry"])
def create_site(city: str, body: api.SiteIn, ctx: Ctx) -> api.Site:
    with transaction(ctx.factory) as s:
        c = registry.get_city(s, city)
        return _site(registry.create_site(s, c, body), c.slug)


@router.get(
    "/cities/{city}/sites/{site}/devices", response_model=list[api.Device], tags=["registry"]
)
def list_devices(city: str, site: str, ctx: Ctx) -> list[api.Device]:
    with transaction(ctx.factory) as s:
        c = registry.get_city(s, city)
        st = registry.get_site(s, c, site)
        return [_device(d, c.slug, st.slug) for d in registry.list_devices(s, st)]


@router.post(
    "/cities/{city}/sites/{site}/devices",
    response_model=api.Device,
    status_code=201,
    tags=["registry"],
)
def create_device(city: str, site: str, body: api.DeviceIn, ctx: Ctx) -> api.Device:
    with transaction(ctx.factory) as s:
        c = registry.get_city(s, city)
        st = registry.get_site(s, c, site)
        return _device(registry.create_device(s, st, body), c.slug, st.slug)


@router.get("/resources", response_model=list[api.Resource], tags=["registry"])
def list_resources(ctx: Ctx) -> list[api.Resource]:
    with transaction(ctx.factory) as s:
        return [api.Resource.model_validate(r) for r in registry.resources(s).values()]


@router.get("/cities/{city}/metrics", response_model=api.MetricsResponse, tags=["metrics"])
async def city_metrics(
    city: str,
    ctx: Ctx,
    names: Annotated[
        str | None, Query(description="Comma-separated metric names; all when absent.")
    ] = None,
    from_: Annotated[
        date | None, Query(alias="from", description="First day (inclusive), city time.")
    ] = None,
    to: Annotated[date | None, Query(description="Last day (inclusive); today if absent.")] = None,
    interval: Interval = "day",
    group_by: GroupBy | None = None,
) -> api.MetricsResponse:
    """Metric series per window. A value not recorded is null with a reason, never 0."""
    wanted = queries.parse_names(names)

    def read() -> api.MetricsResponse:
        with transaction(ctx.factory) as s:
            return queries.metric_series(s, city, wanted, from_, to, interval, group_by)

    return await run_in_threadpool(read)
