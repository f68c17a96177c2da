"""The registry: cities, sites, devices, resources and their writes. The metrics are in
`services.http.metrics`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from fabcity.core import models, pagination
from fabcity.core.db import transaction
from fabcity.registry import entries
from schemas import api
from schemas.reports import Page
from services.http.dependencies import Context, context

router = APIRouter(prefix="/v1")

Ctx = Annotated[Context, Depends(context)]
Limit = Annotated[
    int, Query(ge=1, le=pagination.MAX_LIMIT, description="Items per page, at most 1000.")
]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]
Row = TypeVar("Row")
Item = TypeVar("Item", bound=BaseModel)


def page(
    rows: Sequence[Row], limit: int, key: Callable[[Row], str], body: Callable[[Row], Item]
) -> Page[Item]:
    """A page from `limit + 1` rows read: the extra row only says that more follow."""
    more = len(rows) > limit
    return Page[Item](
        items=[body(r) for r in rows[:limit]],
        next_cursor=pagination.encode([key(rows[limit - 1])]) if more else None,
    )


def _after(cursor: str | None) -> str | None:
    key = pagination.decode(cursor, 1)
    return key[0] if key else None


@router.get("/cities", response_model=Page[api.City], tags=["registry"])
def list_cities(
    ctx: Ctx, limit: Limit = pagination.DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[api.City]:
    with transaction(ctx.factory) as s:
        rows = entries.list_cities(s, _after(cursor), limit + 1)
        return page(rows, limit, lambda c: c.slug, api.City.model_validate)


@router.post("/cities", response_model=api.City, status_code=201, tags=["registry"])
def create_city(body: api.CityIn, ctx: Ctx) -> api.City:
    with transaction(ctx.factory) as s:
        return api.City.model_validate(entries.create_city(s, body))


@router.get("/cities/{city}", response_model=api.City, tags=["registry"])
def get_city(city: str, ctx: Ctx) -> api.City:
    with transaction(ctx.factory) as s:
        return api.City.model_validate(entries.get_city(s, city))


def _site(site: models.Site, city: str) -> api.Site:
    return api.Site.model_validate({**_fields(site, api.SiteIn), "city": city})


def device_body(device: models.Device, city: str, site: str) -> api.Device:
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


@router.get("/cities/{city}/sites", response_model=Page[api.Site], tags=["registry"])
def list_sites(
    city: str, ctx: Ctx, limit: Limit = pagination.DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[api.Site]:
    with transaction(ctx.factory) as s:
        c = entries.get_city(s, city)
        rows = entries.list_sites(s, c, _after(cursor), limit + 1)
        return page(rows, limit, lambda site: site.slug, lambda site: _site(site, c.slug))


@router.post("/cities/{city}/sites", response_model=api.Site, status_code=201, tags=["registry"])
def create_site(city: str, body: api.SiteIn, ctx: Ctx) -> api.Site:
    with transaction(ctx.factory) as s:
        c = entries.get_city(s, city)
        return _site(entries.create_site(s, c, body), c.slug)


@router.get(
    "/cities/{city}/sites/{site}/devices", response_model=Page[api.Device], tags=["registry"]
)
def list_devices(
    city: str, site: str, ctx: Ctx, limit: Limit = pagination.DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[api.Device]:
    with transaction(ctx.factory) as s:
        c = entries.get_city(s, city)
        st = entries.get_site(s, c, site)
        rows = entries.list_devices(s, st, _after(cursor), limit + 1)
        return page(rows, limit, lambda d: d.slug, lambda d: device_body(d, c.slug, st.slug))


@router.post(
    "/cities/{city}/sites/{site}/devices",
    response_model=api.Device,
    status_code=201,
    tags=["registry"],
)
def create_device(city: str, site: str, body: api.DeviceIn, ctx: Ctx) -> api.Device:
    with transaction(ctx.factory) as s:
        c = entries.get_city(s, city)
        st = entries.get_site(s, c, site)
        return device_body(entries.create_device(s, st, body), c.slug, st.slug)


@router.get("/resources", response_model=Page[api.Resource], tags=["registry"])
def list_resources(
    ctx: Ctx, limit: Limit = pagination.DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[api.Resource]:
    with transaction(ctx.factory) as s:
        rows = entries.list_resources(s, _after(cursor), limit + 1)
        return page(rows, limit, lambda r: r.name, api.Resource.model_validate)
