"""The registry: cities, sites, devices, resources and their writes, corrections (PATCH),
retirements (DELETE) and the log of changes. The metrics are in `services.http.metrics`."""

from __future__ import annotations

from fastapi import APIRouter

from fabcity.core import models
from fabcity.core.errors import Invalid
from fabcity.ingest import rebuild
from fabcity.registry import changes, entries
from fabcity.registry.keys import Principal
from schemas import api
from schemas.reports import Page
from services.http.dependencies import AppStateDep, PagingDep, PrincipalDep, SessionDep

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


def actor(who: Principal) -> str:
    """Who made a change, as the log keeps it."""
    return who.role if who.key_id is None else f"key {who.key_id} ({who.role})"


@router.patch("/cities/{city}", response_model=api.City)
def update_city(
    city: str, body: api.CityPatch, s: SessionDep, who: PrincipalDep, state: AppStateDep
) -> api.City:
    """Correct a city. A new time zone moves every stored event to its local hour in it, and
    the hours it touches are recomputed; the change is logged (`/changes`)."""
    changed = changes.update_city(s, entries.get_city(s, city), body, actor(who))
    found = api.City.model_validate(changed)
    state.dispatcher.nudge()
    return found


@router.delete("/cities/{city}", response_model=api.Removal)
def remove_city(city: str, s: SessionDep, who: PrincipalDep) -> api.Removal:
    """Retire a city that events refer to (kept, refusing new events); delete one that none
    does, with its sites, devices and statistics."""
    return changes.remove_city(s, entries.get_city(s, city), actor(who))


@router.get("/cities/{city}/changes", response_model=Page[api.RegistryChange])
def list_changes(city: str, s: SessionDep, paging: PagingDep) -> Page[api.RegistryChange]:
    """Every change to the city's registry entries, oldest first: who, when, before, after,
    and how many hours it sent to be recomputed."""
    after = paging.after()
    if after is not None and not after.isdigit():
        raise Invalid("cursor: not one of this list's cursors")
    c = entries.get_city(s, city)
    rows = changes.list_changes(s, c, int(after) if after else None, paging.rows)
    return paging.page(rows, lambda r: [str(r.id)], api.RegistryChange.model_validate)


@router.get("/cities/{city}/sites", response_model=Page[api.Site])
def list_sites(city: str, s: SessionDep, paging: PagingDep) -> Page[api.Site]:
    c = entries.get_city(s, city)
    rows = entries.list_sites(s, c, paging.after(), paging.rows)
    return paging.page(rows, _slug, lambda site: entries.site_view(site, c.slug))


@router.post("/cities/{city}/sites", response_model=api.Site, status_code=201)
def create_site(city: str, body: api.SiteIn, s: SessionDep) -> api.Site:
    c = entries.get_city(s, city)
    return entries.site_view(entries.create_site(s, c, body), c.slug)


@router.patch("/cities/{city}/sites/{site}", response_model=api.Site)
def update_site(
    city: str, site: str, body: api.SitePatch, s: SessionDep, who: PrincipalDep
) -> api.Site:
    """Correct a site (name, kind, coordinates). It cannot move to another city: its events
    name this one."""
    c = entries.get_city(s, city)
    changed = changes.update_site(s, c, entries.get_site(s, c, site), body, actor(who))
    return entries.site_view(changed, c.slug)


@router.delete("/cities/{city}/sites/{site}", response_model=api.Removal)
def remove_site(city: str, site: str, s: SessionDep, who: PrincipalDep) -> api.Removal:
    """Retire a site that events refer to; delete one that none does, with its devices."""
    c = entries.get_city(s, city)
    return changes.remove_site(s, c, entries.get_site(s, c, site), actor(who))


@router.get("/cities/{city}/sites/{site}/devices", response_model=Page[api.Device])
def list_devices(city: str, site: str, s: SessionDep, paging: PagingDep) -> Page[api.Device]:
    c = entries.get_city(s, city)
    st = entries.get_site(s, c, site)
    rows = entries.list_devices(s, st, paging.after(), paging.rows)
    return paging.page(rows, _slug, lambda d: entries.device_view(d, c.slug, st.slug))


@router.post("/cities/{city}/sites/{site}/devices", response_model=api.Device, status_code=201)
def create_device(city: str, site: str, body: api.DeviceIn, s: SessionDep) -> api.Device:
    c = entries.get_city(s, city)
    st = entries.get_site(s, c, site)
    return entries.device_view(entries.create_device(s, st, body), c.slug, st.slug)


@router.patch("/cities/{city}/sites/{site}/devices/{device}", response_model=api.Device)
def update_device(
    city: str,
    site: str,
    device: str,
    body: api.DevicePatch,
    s: SessionDep,
    who: PrincipalDep,
    state: AppStateDep,
) -> api.Device:
    """Correct a device. A new kind or settings derives the flows of its stored events again
    and recomputes their hours; the change is logged (`/changes`)."""
    c = entries.get_city(s, city)
    st = entries.get_site(s, c, site)
    d = changes.get_device(s, st, device)
    changed = changes.update_device(s, c, st, d, body, actor(who), rebuild.rederive_device)
    found = entries.device_view(changed, c.slug, st.slug)
    state.dispatcher.nudge()
    return found


@router.delete("/cities/{city}/sites/{site}/devices/{device}", response_model=api.Removal)
def remove_device(
    city: str, site: str, device: str, s: SessionDep, who: PrincipalDep
) -> api.Removal:
    """Retire a device that events refer to (its new events are refused with the reason);
    delete one that none does."""
    c = entries.get_city(s, city)
    st = entries.get_site(s, c, site)
    return changes.remove_device(s, c, st, changes.get_device(s, st, device), actor(who))


@router.post("/resources", response_model=api.Resource, status_code=201)
def add_resource(body: api.ResourceIn, s: SessionDep, who: PrincipalDep) -> api.Resource:
    """Add a resource (`plywood`): its dimension, its EW-MFA category if it is a material,
    and whether it is secondary (made of waste)."""
    return api.Resource.model_validate(changes.add_resource(s, body, actor(who)))


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
        found,
        lambda row: [row[0], row[1].slug],
        lambda row: entries.device_view(row[1], c.slug, row[0]),
    )
