"""The registry: cities, sites, devices, resources and their writes. The metrics are in
`services.http.metrics`."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from fabcity.core import models
from fabcity.registry import entries
from schemas import api
from schemas.reports import Page
from services.http.dependencies import PagingDep, PrincipalDep, SessionDep

router = APIRouter(prefix="/v1", tags=["registry"])


def _slug(row: models.City | models.Site | models.Device) -> list[str]:
    return [row.slug]


@router.get("/cities", response_model=Page[api.City])
def list_cities(s: SessionDep, paging: PagingDep, who: PrincipalDep) -> Page[api.City]:
    """Every city for an admin or a key of all cities; a key bound to one city sees only it
    (the others' names and populations are theirs)."""
    only = None if who.role == "admin" else who.city
    rows = entries.list_cities(s, paging.after(), paging.rows, only=only)
    return paging.page(rows, _slug, api.City.model_validate)


@router.post("/cities", response_model=api.City, status_code=201)
def create_city(body: api.CityIn, s: SessionDep) -> api.City:
    return api.City.model_validate(entries.create_city(s, body))


@router.get("/cities/{city}", response_model=api.City)
def get_city(city: str, s: SessionDep) -> api.City:
    return api.City.model_validate(entries.get_city(s, city))


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


@router.get("/cities/{city}/sites", response_model=Page[api.Site])
def list_sites(city: str, s: SessionDep, paging: PagingDep) -> Page[api.Site]:
    c = entries.get_city(s, city)
    rows = entries.list_sites(s, c, paging.after(), paging.rows)
    return paging.page(rows, _slug, lambda site: _site(site, c.slug))


@router.post("/cities/{city}/sites", response_model=api.Site, status_code=201)
def create_site(city: str, body: api.SiteIn, s: SessionDep) -> api.Site:
    c = entries.get_city(s, city)
    return _site(entries.create_site(s, c, body), c.slug)


@router.get("/cities/{city}/sites/{site}/devices", response_model=Page[api.Device])
def list_devices(city: str, site: str, s: SessionDep, paging: PagingDep) -> Page[api.Device]:
    c = entries.get_city(s, city)
    st = entries.get_site(s, c, site)
    rows = entries.list_devices(s, st, paging.after(), paging.rows)
    return paging.page(rows, _slug, lambda d: _device(d, c.slug, st.slug))


@router.post("/cities/{city}/sites/{site}/devices", response_model=api.Device, status_code=201)
def create_device(city: str, site: str, body: api.DeviceIn, s: SessionDep) -> api.Device:
    c = entries.get_city(s, city)
    st = entries.get_site(s, c, site)
    return _device(entries.create_device(s, st, body), c.slug, st.slug)


@router.get("/resources", response_model=Page[api.Resource])
def list_resources(s: SessionDep, paging: PagingDep) -> Page[api.Resource]:
    rows = entries.list_resources(s, paging.after(), paging.rows)
    return paging.page(rows, lambda r: [r.name], api.Resource.model_validate)


@router.get("/cities/{city}/devices", response_model=Page[api.Device])
def city_devices(city: str, s: SessionDep, paging: PagingDep) -> Page[api.Device]:
    """Every device of a city with its online status and when it was last heard from."""
    after = paging.after_pair()  # a cursor not ours is a 422 before an unknown city's 404
    c = entries.get_city(s, city)
    found = entries.city_devices(s, c, after, paging.rows)
    return paging.page(
        found, lambda row: [row[0], row[1].slug], lambda row: _device(row[1], c.slug, row[0])
    )
