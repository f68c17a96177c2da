"""The registry: cities, sites, devices and resources. All registry queries live here."""

from __future__ import annotations

import time
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ValidationError
from sqlalchemy import Select, bindparam, func, select, text, tuple_, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from fabcity.adapters import routing
from fabcity.adapters.base import Device as AdapterDevice
from fabcity.core import models
from fabcity.core.db import advisory_lock, is_postgres
from fabcity.core.errors import Busy, Conflict, Invalid, NotFound, one_line
from fabcity.flows.derive import PlainResource, ResourceInfo
from fabcity.flows.units import CANONICAL
from schemas import api, devices

T = TypeVar("T")


@dataclass(frozen=True)
class ResourceSpec:
    name: str
    dimension: str
    mfa_category: str | None
    secondary: bool = False

    @property
    def unit(self) -> str:
        return CANONICAL[self.dimension]


# EW-MFA categories: MF1 biomass, MF2 metal ores, MF3 non-metallic minerals, MF4 fossil energy
# materials/carriers (plastics are counted with their fossil feedstock). Energy carriers
# measured as energy, counts and hours stand outside the material accounts (no category).
DEFAULT_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec("filament", "mass", "MF4"),
    ResourceSpec("plastic", "mass", "MF4"),
    ResourceSpec("resin", "mass", "MF4"),
    ResourceSpec("recycled_plastic", "mass", "MF4", secondary=True),
    ResourceSpec("wood", "mass", "MF1"),
    ResourceSpec("paper", "mass", "MF1"),
    ResourceSpec("textile", "mass", "MF1"),
    ResourceSpec("food", "mass", "MF1"),
    ResourceSpec("biomaterial", "mass", "MF1"),
    ResourceSpec("compost", "mass", "MF1", secondary=True),
    ResourceSpec("metal", "mass", "MF2"),
    ResourceSpec("scrap_metal", "mass", "MF2", secondary=True),
    ResourceSpec("electronics", "mass", "MF2"),
    ResourceSpec("glass", "mass", "MF3"),
    ResourceSpec("concrete", "mass", "MF3"),
    ResourceSpec("stone", "mass", "MF3"),
    ResourceSpec("water", "volume", None),
    ResourceSpec("electricity", "energy", None),
    ResourceSpec("part", "count", None),
    ResourceSpec("tool", "count", None),
    ResourceSpec("furniture", "count", None),
    ResourceSpec("product", "count", None),
    ResourceSpec("design", "count", None),
    ResourceSpec("machine_hours", "time", None),
    ResourceSpec("work_hours", "time", None),
    ResourceSpec("training_hours", "time", None),
)


def seed_resources(session: Session) -> int:
    """Add the default resources that are missing; returns how many were added."""
    have = set(session.scalars(select(models.Resource.name)))
    added = [
        models.Resource(
            name=r.name,
            unit=r.unit,
            dimension=r.dimension,
            mfa_category=r.mfa_category,
            secondary=r.secondary,
        )
        for r in DEFAULT_RESOURCES
        if r.name not in have
    ]
    session.add_all(added)
    session.flush()
    return len(added)


def resources(session: Session) -> dict[str, models.Resource]:
    return {r.name: r for r in session.scalars(select(models.Resource))}


def resource_infos(session: Session) -> dict[str, ResourceInfo]:
    """The resources as the flows' path reads them: plain tuples, without the ORM's objects
    and attribute lookups (this is read for every batch, and each flow reads it)."""
    rows = session.execute(
        select(models.Resource.name, models.Resource.unit, models.Resource.secondary)
    )
    return {name: PlainResource(name, unit, secondary) for name, unit, secondary in rows}


# Cities, sites, devices ---------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or a refusal that says so."""
    try:
        return ZoneInfo(name)
    # OSError: the name is looked up as a file path (a name too long for one, say).
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise Invalid(f"unknown time zone {name!r}; use an IANA name") from exc


def create_city(session: Session, body: api.CityIn) -> models.City:
    zone(body.timezone)
    if session.scalar(select(models.City.id).where(models.City.slug == body.slug)) is not None:
        raise Conflict(f"city {body.slug!r} exists")
    city = models.City(**body.model_dump())
    session.add(city)
    session.flush()
    return city


def get_city(session: Session, slug: str) -> models.City:
    city = session.scalar(select(models.City).where(models.City.slug == slug))
    if city is None:
        raise NotFound(f"no city {slug!r}; list them at /v1/cities")
    return city


def page(
    session: Session, query: Select[T], key: Any, after: str | None, limit: int | None
) -> list[T]:
    """One page of `query` in `key` order: the rows after the cursor `after`."""
    query = query.order_by(key).limit(limit)
    if after is not None:
        query = query.where(key > after)
    return list(session.scalars(query))


def list_cities(
    session: Session, after: str | None = None, limit: int | None = None, only: str | None = None
) -> list[models.City]:
    """Cities by slug; `after` and `limit` page through them (keyset: stable under inserts).
    `only` keeps the one city a caller is bound to (None: every city)."""
    query = select(models.City)
    if only is not None:
        query = query.where(models.City.slug == only)
    return page(session, query, models.City.slug, after, limit)


def create_site(session: Session, city: models.City, body: api.SiteIn) -> models.Site:
    exists = select(models.Site.id).where(
        models.Site.city_id == city.id, models.Site.slug == body.slug
    )
    if session.scalar(exists) is not None:
        raise Conflict(f"site {body.slug!r} exists in {city.slug!r}")
    site = models.Site(city_id=city.id, **body.model_dump(mode="json"))
    session.add(site)
    session.flush()
    return site


def get_site(session: Session, city: models.City, slug: str) -> models.Site:
    site = session.scalar(
        select(models.Site).where(models.Site.city_id == city.id, models.Site.slug == slug)
    )
    if site is None:
        raise NotFound(f"no site {slug!r} in city {city.slug!r}")
    return site


def list_sites(
    session: Session, city: models.City, after: str | None = None, limit: int | None = None
) -> list[models.Site]:
    query = select(models.Site).where(models.Site.city_id == city.id)
    return page(session, query, models.Site.slug, after, limit)


def active_sites(session: Session, city_id: int) -> Callable[[datetime], int]:
    """How many of the city's sites were active at an instant (a window's start): those never
    retired, and those retired after it. A retired site no longer lowers the reporting
    coverage of the windows after its retirement, and still counts in those it lived through,
    so a past window's coverage does not move when a site retires today. One read per call."""
    return active_sites_of(session, [city_id])[city_id]


def active_sites_of(
    session: Session, city_ids: Sequence[int]
) -> dict[int, Callable[[datetime], int]]:
    """`active_sites` of each city, in one read."""
    found = session.execute(
        select(models.Site.city_id, models.Site.retired_at).where(models.Site.city_id.in_(city_ids))
    )
    never = dict.fromkeys(city_ids, 0)
    retired: dict[int, list[datetime]] = {c: [] for c in city_ids}
    for city_id, when in found:
        if when is None:
            never[city_id] += 1
        else:
            # SQLite returns stored times without their offset; they were stored in UTC.
            retired[city_id].append(when if when.tzinfo is not None else when.replace(tzinfo=UTC))

    def counter(never: int, retired: list[datetime]) -> Callable[[datetime], int]:
        retired.sort()

        def active_at(instant: datetime) -> int:
            return never + len(retired) - bisect_right(retired, instant)

        return active_at

    return {c: counter(never[c], retired[c]) for c in city_ids}


def site_coordinates(session: Session, city_id: int) -> list[tuple[float, float]]:
    """(latitude, longitude) of the city's sites that have them."""
    rows = session.execute(
        select(models.Site.latitude, models.Site.longitude).where(
            models.Site.city_id == city_id,
            models.Site.latitude.is_not(None),
            models.Site.longitude.is_not(None),
        )
    )
    return [(lat, lon) for lat, lon in rows if lat is not None and lon is not None]


def create_device(session: Session, site: models.Site, body: api.DeviceIn) -> models.Device:
    exists = select(models.Device.id).where(
        models.Device.site_id == site.id, models.Device.slug == body.slug
    )
    if session.scalar(exists) is not None:
        raise Conflict(f"device {body.slug!r} exists at site {site.slug!r}")
    stored = checked_settings(session, body.adapter, body.settings)
    device = models.Device(site_id=site.id, **{**body.model_dump(), "settings": stored})
    session.add(device)
    session.flush()
    return device


def checked_settings(
    session: Session, adapter: str, given: dict[str, Any], device_id: int | None = None
) -> dict[str, Any]:
    """A device's settings for `adapter`, validated, as stored; refused when another active
    device (not `device_id`) already reads what they point at."""
    settings = _device_settings(adapter, given)
    identity = routing.settings_identity(adapter, settings)
    if identity is not None:
        for other in adapter_devices(session, adapter, include_retired=False):
            if other.id == device_id:
                continue
            if routing.settings_identity(other.adapter, other.settings) == identity:
                raise Conflict(
                    f"device {other.source} already reads {adapter} {identity!r}; "
                    "two devices on one topic would count its messages twice"
                )
    # Only the keys given are stored: defaults apply when read, so a better default later
    # reaches every device that did not choose otherwise.
    stored: dict[str, Any] = settings.model_dump(mode="json", exclude_unset=True)
    return stored


def _device_settings(adapter: str, settings: dict[str, Any]) -> BaseModel:
    try:
        return devices.validate_settings(adapter, settings)
    except ValidationError as exc:
        raise Invalid(
            f"settings of a {adapter} device: {one_line(exc.errors(include_url=False), 'settings')}"
        ) from exc
    except ValueError as exc:
        raise Invalid(str(exc)) from exc


def adapter_devices(
    session: Session, adapter: str | None = None, include_retired: bool = True
) -> list[AdapterDevice]:
    """Every device read by an adapter (not the native topics), with what routing needs.

    A retired device is still read, so that its messages are refused as a retired device's
    (and dead-lettered with that reason), until an active device takes over what it read."""
    query = (
        select(models.Device, models.Site.slug, models.City.slug, models.City.timezone)
        .join(models.Site, models.Site.id == models.Device.site_id)
        .join(models.City, models.City.id == models.Site.city_id)
        .where(models.Device.adapter != "fabcity")
        .order_by(models.Device.id)
    )
    if adapter is not None:
        query = query.where(models.Device.adapter == adapter)
    out: list[AdapterDevice] = []
    retired: list[AdapterDevice] = []
    zones: dict[str, ZoneInfo] = {}
    for device, site, city, timezone in session.execute(query):
        if device.adapter not in routing.ADAPTERS:
            continue
        try:
            settings = devices.validate_settings(device.adapter, device.settings or {})
        except ValueError:
            continue  # registered before a stricter rule; `devices list` shows it
        (out if device.retired_at is None else retired).append(
            AdapterDevice(
                id=device.id,
                source=f"/{city}/{site}/{device.slug}",
                adapter=device.adapter,
                settings=settings,
                timezone=zones.setdefault(timezone, ZoneInfo(timezone)),
            )
        )
    if not include_retired:
        return out
    taken = {routing.settings_identity(d.adapter, d.settings) for d in out}
    return out + [
        d for d in retired if routing.settings_identity(d.adapter, d.settings) not in taken
    ]


def all_devices(session: Session, city: str | None = None) -> list[tuple[str, str, models.Device]]:
    """(city slug, site slug, device) for every device, or a city's."""
    query = (
        select(models.City.slug, models.Site.slug, models.Device)
        .join(models.Site, models.Site.id == models.Device.site_id)
        .join(models.City, models.City.id == models.Site.city_id)
        .order_by(models.City.slug, models.Site.slug, models.Device.slug)
    )
    if city is not None:
        query = query.where(models.City.slug == city)
    return [(c, s, d) for c, s, d in session.execute(query)]


def list_devices(
    session: Session, site: models.Site, after: str | None = None, limit: int | None = None
) -> list[models.Device]:
    query = select(models.Device).where(models.Device.site_id == site.id)
    return page(session, query, models.Device.slug, after, limit)


def city_devices(
    session: Session, city: models.City, after: tuple[str, str] | None, limit: int
) -> list[tuple[str, models.Device]]:
    """(site slug, device) of every device in a city, by site then device, a page at a time."""
    query = (
        select(models.Site.slug, models.Device)
        .join(models.Site, models.Site.id == models.Device.site_id)
        .where(models.Site.city_id == city.id)
        .order_by(models.Site.slug, models.Device.slug)
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(models.Site.slug, models.Device.slug) > tuple_(*after))
    return [(site, device) for site, device in session.execute(query)]


def list_resources(
    session: Session, after: str | None = None, limit: int | None = None
) -> list[models.Resource]:
    query = select(models.Resource)
    return page(session, query, models.Resource.name, after, limit)


def mark_status(session: Session, statuses: dict[int, tuple[datetime, bool]]) -> None:
    """Set devices online or offline from status events, unless something newer was heard."""
    for device_id, (when, online) in sorted(statuses.items()):
        session.execute(
            update(models.Device)
            .where(
                models.Device.id == device_id,
                models.Device.last_seen.is_(None) | (models.Device.last_seen <= when),
            )
            .values(online=online, last_seen=when)
        )


def mark_heard(session: Session, heard: dict[str, datetime]) -> None:
    """Devices heard from on their native topics (`/{city}/{site}/{device}`: the newest
    receive time of each): `last_seen` moves forward, never back, and a device whose status
    nobody ever reported is online, since it speaks. One statement, run once per device,
    which finds the device by its names itself (no lookup first); a source naming no
    registered device changes nothing."""
    if not heard:
        return
    device = models.Device
    # A status event (`mark_status`) decides `online` once it has: a will saying offline is
    # not undone by a message received before it.
    site = (
        select(models.Site.id)
        .join(models.City, models.City.id == models.Site.city_id)
        .where(models.City.slug == bindparam("h_city"), models.Site.slug == bindparam("h_site"))
        .scalar_subquery()
    )
    statement = (
        update(device)
        .where(
            device.site_id == site,  # with the slug: the unique index on (site_id, slug)
            device.slug == bindparam("h_device"),
            device.last_seen.is_(None) | (device.last_seen < bindparam("h_when")),
        )
        .values(last_seen=bindparam("h_when"), online=func.coalesce(device.online, True))
    )
    rows = []
    for source, when in sorted(heard.items()):  # one order: concurrent writers lock alike
        parts = source.split("/")
        if len(parts) == 4 and parts[0] == "" and all(parts[1:]):
            rows.append(
                {"h_city": parts[1], "h_site": parts[2], "h_device": parts[3], "h_when": when}
            )
    if rows:
        # On the connection: one statement run for every row (executemany), where the
        # session would take a list of rows for an update by primary key.
        session.connection().execute(statement, rows)


# What the bridge listens to (issue 17) --------------------------------------------------------


# Ingest derives an event from the registry as it reads it (a city's zone, a device's kind and
# settings). A change that re-derives a city's stored events can only reach those it sees, so
# an event stored while the change is uncommitted would keep the old derivation for good. Each
# ingest batch holds its cities' locks shared from before it reads the registry until it
# commits; such a change takes its city's exclusive before it writes anything, so it waits for
# the batches under way (and then sees their events), and later batches of that city wait for
# it (and then read the new entry). Keyed by the slug (CRC-32): a batch knows its cities' slugs
# before it looks anything up; two slugs of one key only wait for each other.
REGISTRY_LOCK_SPACE = 0x0FAB_4E61
# A key no slug has (theirs are CRC-32s, never negative), taken before the cities' own:
# shared by every batch and every city's change, exclusive by what rewrites every city at
# once (`hold_every_city`), which then needs one lock rather than one a city.
EVERY_CITY = -1
# A zone change moves every event of its city (about 40 us an event here: minutes for a big
# city). A batch waits this long for it, then is refused as Busy (an HTTP 503 with
# Retry-After; the bridge tries the batch again later): a request does not hold an API thread
# for minutes, and nothing is acknowledged that was not stored. Another change of the city
# waits as long, then is refused the same way, nothing changed.
REGISTRY_WAIT_S = 10.0


def hold_cities(
    session: Session, slugs: Iterable[str], shared: bool, patient: bool = False
) -> None:
    """Hold what ingest reads of these cities' registry until the transaction ends: still
    (shared, an ingest batch) or changing (exclusive, a change that re-derives stored events).
    Either is `Busy` after `REGISTRY_WAIT_S`, unless `patient` (a rebuild an operator started,
    which waits for what holds its city however long)."""
    slugs = set(slugs)
    keys = sorted({zlib.crc32(slug.encode()) & 0x7FFF_FFFF for slug in slugs})
    if not shared:
        # A change waits for the batches under way (a second or so), not for what holds the
        # city for minutes (a rebuild, another change of it such as a big city's zone move):
        # its request would hold an API thread as long, and a client that gave up meanwhile
        # could not tell whether the change was made. Refused, nothing is changed.
        with _waiting_at_most(session, None if patient else REGISTRY_WAIT_S, slugs):
            advisory_lock(session, REGISTRY_LOCK_SPACE, [EVERY_CITY], shared=True)
            advisory_lock(session, REGISTRY_LOCK_SPACE, keys, shared=False)
        return
    if not keys or not is_postgres(session):  # SQLite has one writer at a time anyway
        return
    params = {"space": REGISTRY_LOCK_SPACE, "keys": [EVERY_CITY, *keys]}
    # Tried again and again rather than waited for: the wait is bounded, where a lock_timeout
    # would bound every later wait of the batch's transaction too. Each try is a statement of
    # its own, so the reads after the one that holds see the change committed.
    deadline, pause = time.monotonic() + REGISTRY_WAIT_S, 0.01
    try_all = text(
        "SELECT bool_and(pg_try_advisory_xact_lock_shared(:space, k)) "
        "FROM unnest(CAST(:keys AS integer[])) AS k"
    )
    while not session.connection().execute(try_all, params).scalar():
        if time.monotonic() >= deadline:
            named = ", ".join(slug[:64] for slug in sorted(slugs)[:5])
            raise Busy(
                f"a city of these events ({named}) is having what is derived from its "
                "stored events rewritten (its time zone or a device's kind or settings "
                "changed, or `fabcity metrics rebuild --from-events`); nothing was stored: "
                "retry when it is done"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


@contextmanager
def _waiting_at_most(session: Session, seconds: float | None, slugs: set[str]) -> Iterator[None]:
    """Locks taken inside wait at most `seconds` (None: as long as it takes), then `Busy`.
    PostgreSQL's `lock_timeout`, for these statements only: later waits of the transaction
    (a row of the city, of a device) are not bounded by it."""
    if seconds is None or not is_postgres(session):  # SQLite: one writer at a time anyway
        yield
        return
    connection = session.connection()
    bound = text("SELECT set_config('lock_timeout', :value, true)")
    before = connection.execute(text("SELECT current_setting('lock_timeout')")).scalar()
    connection.execute(bound, {"value": f"{max(1, round(seconds * 1000))}ms"})
    try:
        yield
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        named = ", ".join(slug[:64] for slug in sorted(slugs)[:5])
        raise Busy(
            f"city {named} is held by a change of what is derived from its stored events (a "
            "time zone, a device's kind or settings, a removal, or `fabcity metrics rebuild`) "
            f"that did not end within {seconds:g} s; nothing was changed: retry when it is done"
        ) from None
    connection.execute(bound, {"value": before})


# PostgreSQL's SQLSTATE for a lock not taken within `lock_timeout`.
LOCK_NOT_AVAILABLE = "55P03"


def hold_every_city(session: Session) -> None:
    """`hold_cities`, exclusive, of every city there is or will be until the transaction
    ends: every batch waits (then is `Busy`), and so does every city's change."""
    # Not bounded: an operator's command, which waits for the batches and changes under way.
    advisory_lock(session, REGISTRY_LOCK_SPACE, [EVERY_CITY], shared=False)


def registry_version(session: Session) -> int:
    """A number the database raises at every write that changes what the bridge listens to
    (triggers of migration 0014): one primary-key read, cheap to ask every half second."""
    # Read by every ingest batch (`fabcity.ingest.origins.Known`): plain SQL costs half the
    # client CPU of a compiled select (59 against 121 us here).
    found = session.connection().exec_driver_sql(
        f"SELECT version FROM {models.RegistryVersion.__tablename__} WHERE id = 1"
    )
    return int(found.scalar() or 0)


@dataclass(frozen=True)
class Listened:
    """The devices a bridge listens for: those read by an adapter, and the ids of those on
    the native topics. Retired devices, and devices of a retired site or city, are not."""

    adapters: list[AdapterDevice]
    native: list[int]


def listened_devices(session: Session) -> Listened:
    active = session.execute(
        select(models.Device.id, models.Device.adapter)
        .join(models.Site, models.Site.id == models.Device.site_id)
        .join(models.City, models.City.id == models.Site.city_id)
        .where(
            models.Device.retired_at.is_(None),
            models.Site.retired_at.is_(None),
            models.City.retired_at.is_(None),
        )
    ).all()
    ids = {device_id for device_id, _ in active}
    native = sorted(device_id for device_id, adapter in active if adapter == "fabcity")
    return Listened([d for d in adapter_devices(session) if d.id in ids], native)


def mark_listening(session: Session, since: dict[int, datetime | None]) -> None:
    """Record since when the bridge listens to each device (None: it no longer does). Only
    this column: the registry's triggers do not fire on it."""
    if not since:
        return
    statement = (
        update(models.Device)
        .where(models.Device.id == bindparam("l_id"))
        .values(listening_since=bindparam("l_since"))
    )
    rows = [{"l_id": device_id, "l_since": when} for device_id, when in sorted(since.items())]
    session.connection().execute(statement, rows)


def forget_listening(session: Session) -> None:
    """No device is listened to: the bridge stops, or starts after one that died."""
    session.execute(
        update(models.Device)
        .where(models.Device.listening_since.is_not(None))
        .values(listening_since=None)
    )


# The answer for a site or a device, as the API and the CLI's `--json` give it.


def site_view(site: models.Site, city: str) -> api.Site:
    return api.Site.model_validate(
        {**_fields(site, api.SiteIn), "city": city, "retired_at": site.retired_at}
    )


def device_view(device: models.Device, city: str, site: str) -> api.Device:
    return api.Device.model_validate(
        {
            **_fields(device, api.DeviceIn),
            "city": city,
            "site": site,
            "online": device.online,
            "last_seen": device.last_seen,
            "listening_since": device.listening_since,
            "retired_at": device.retired_at,
        }
    )


def _fields(row: object, model: type[BaseModel]) -> dict[str, object]:
    return {name: getattr(row, name) for name in model.model_fields}
