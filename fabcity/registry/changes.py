"""Changes to registry entries after they were made: corrected (PATCH), retired or deleted,
resources added. Each change is logged (who, when, the fields before and after), and a change
that moves figures sends the windows it moves to be recomputed in the same transaction:

- a city's time zone: every stored event and flow of the city moves to its local day and hour
  in the new zone; the hours they left and the hours they entered are rebuilt;
- a device's kind or settings (its material, density, rings, fate): the flows of every stored
  event of the device are derived again, and their hours rebuilt. A change under which a
  stored event can no longer be derived is refused, naming the event;
- a city's population: per-person figures read it when they are asked for, so nothing is
  rebuilt; the log says from when the new number applies.

What cannot be recomputed honestly is refused: a slug (every stored event's `source` and
every key names it) and a site's city (its events name the old city in their source, and
stay keyed by it: moving them would rewrite what was received). To move a site, register it
in the other city and retire the old one.

An entry that stored events refer to is retired, never deleted: it stays, with its events
and figures, and new events naming it are refused with a reason (`fabcity.ingest.origins`).
One that nothing refers to is deleted, with the keys bound to it revoked, so that an entry
registered again under its name cannot inherit them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Column,
    Date,
    Integer,
    MetaData,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from fabcity.core import calendar, models
from fabcity.core.errors import Conflict, Invalid, NotFound
from fabcity.flows.units import CANONICAL
from fabcity.registry import entries
from fabcity.rollups import windows
from fabcity.rollups.windows import Window
from schemas import api

# Hours whose events are placed one by one in a step, when a city changes time zone: about
# 11,000 events of a city of 1,000,000 a year, as the steps of 5,000 events were.
HOURS_A_STEP = 100


def _now() -> datetime:
    return datetime.now(UTC)


def log(
    session: Session,
    *,
    city_id: int | None,
    entry: str,
    name: str,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    actor: str,
    windows_marked: int = 0,
) -> models.RegistryChange:
    change = models.RegistryChange(
        at=_now(),
        city_id=city_id,
        entry=entry,
        name=name,
        action=action,
        before=before,
        after=after,
        actor=actor,
        windows=windows_marked,
    )
    session.add(change)
    session.flush()
    return change


def list_changes(
    session: Session, city: models.City, after: int | None, limit: int
) -> list[models.RegistryChange]:
    """A city's changes, oldest first, a page at a time (keyset on the id)."""
    query = (
        select(models.RegistryChange)
        .where(models.RegistryChange.city_id == city.id)
        .order_by(models.RegistryChange.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(models.RegistryChange.id > after)
    return list(session.scalars(query))


def _diff(
    row: object, patch: dict[str, Any], nullable: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields the patch changes, as they were and as they become. A field that may not be
    null is refused as `null`, rather than read as "leave it"."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name, value in patch.items():
        if value is None and name not in nullable:
            raise Invalid(f"{name}: may not be null; leave it out to keep it")
        old = getattr(row, name)
        if old != value:
            before[name], after[name] = old, value
    return before, after


def _not_retired(row: models.City | models.Site | models.Device, name: str) -> None:
    if row.retired_at is not None:
        raise Conflict(
            f"{name} was retired on {row.retired_at.isoformat()}: it is kept as it was, with "
            "its events"
        )


# Cities ---------------------------------------------------------------------------------------


def update_city(
    session: Session, city: models.City, patch: api.CityPatch, actor: str
) -> models.City:
    given = patch.model_dump(exclude_unset=True)
    if "timezone" in given:
        # Before anything is read of the city: ingest waits from here (`hold_cities`), and a
        # zone change that committed since the city was read is read (each moves the events
        # from where it finds them, and the log says from which zone).
        entries.hold_cities(session, [city.slug], shared=False)
        session.refresh(city, with_for_update=True)
    _not_retired(city, f"city {city.slug!r}")
    before, after = _diff(city, given, ("population",))
    marked = 0
    if "timezone" in after:
        zone = entries.zone(after["timezone"])
        moved = _move_to_zone(session, city.id, entries.zone(city.timezone), zone)
        windows.mark_dirty(session, moved)
        marked = len(moved)
    for name, value in after.items():
        setattr(city, name, value)
    if after:
        log(
            session, city_id=city.id, entry="city", name=f"/{city.slug}", action="update",
            before=before, after=after, actor=actor, windows_marked=marked,
        )  # fmt: skip
    session.flush()
    return city


def _utc(at: datetime) -> datetime:
    # SQLite returns stored times without their offset; they were stored in UTC.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _move_to_zone(session: Session, city_id: int, before: ZoneInfo, zone: ZoneInfo) -> set[Window]:
    """Place every event of the city, and its flows, in its local day and hour of `zone`
    (from `before`, where they are now); returns the hours left and entered. The events'
    instants do not change: only the local hour they are counted in.

    An hour whose every instant lies in one hour of the new zone (all of them, between zones
    whose offsets are whole hours) is moved whole: its events and flows in one `UPDATE` per
    table for the whole city, joined to a table of such moves. Event by event, with the flows
    found by their hour and event, a city of 1,000,000 events took 154 s here against 40:
    each flow's update searched its hour's flows for its event. The other hours (a zone of
    half hours, a clock change inside the hour) are moved event by event. Either way an
    event's hour is read as ingest keyed it in `before` (an invariant ingest and every move
    keep)."""
    days: dict[date, dict[int, calendar.Hour]] = {}
    whole: list[dict[str, Any]] = []
    split: list[tuple[date, int]] = []
    found = select(models.Event.day, models.Event.hour).where(models.Event.city_id == city_id)
    for day, key in session.execute(found.distinct()):
        if day not in days:
            days[day] = {h.key: h for h in calendar.hours_of_day(day, before)}
        hour = days[day].get(key)
        if hour is None:  # not an hour of this zone's day: placed event by event
            split.append((day, key))
            continue
        first, last = _hour_in(hour.start, zone), _hour_in(hour.end - _INSTANT, zone)
        if first != last:
            split.append((day, key))
        elif first != (day, key):
            whole.append({"old_day": day, "old_hour": key, "day": first[0], "hour": first[1]})
    touched: set[Window] = set()
    if whole:
        _move_hours(session, city_id, whole)
        touched |= {(city_id, m["old_day"], m["old_hour"]) for m in whole}
        touched |= {(city_id, m["day"], m["hour"]) for m in whole}
    for part in range(0, len(split), HOURS_A_STEP):
        touched |= _move_events(session, city_id, zone, split[part : part + HOURS_A_STEP])
    return touched


_INSTANT = timedelta(microseconds=1)


def _hour_in(at: datetime, zone: ZoneInfo) -> tuple[date, int]:
    """The local day and hour key of an instant in `zone`, as ingest keys an event's."""
    local = at.astimezone(zone)
    return local.date(), calendar.hour_key(local)


def _move_hours(session: Session, city_id: int, moves: list[dict[str, Any]]) -> None:
    """Every event and flow of each old hour of `moves` to its new hour, in one statement a
    table: each row is moved once, from where it was (in steps, the rows an hour received
    would be moved again with the hour's own)."""
    table = Table(
        f"zone_moves_{city_id}", MetaData(),
        Column("old_day", Date), Column("old_hour", Integer),
        Column("day", Date), Column("hour", Integer),
        prefixes=["TEMPORARY"],
    )  # fmt: skip
    connection = session.connection()
    # A failed move rolls the table back on PostgreSQL; SQLite keeps a temporary table made
    # before the transaction's first write, so one found is emptied and used again.
    table.create(connection, checkfirst=True)
    connection.execute(delete(table))
    connection.execute(insert(table), moves)
    for model in (models.Event, models.Flow):
        connection.execute(
            update(model)
            .where(
                model.city_id == city_id,
                model.day == table.c.old_day,
                model.hour == table.c.old_hour,
            )
            .values(day=table.c.day, hour=table.c.hour)
        )
    table.drop(connection)


def _move_events(
    session: Session, city_id: int, zone: ZoneInfo, hours: list[tuple[date, int]]
) -> set[Window]:
    """The events of these hours, and their flows, placed in `zone` one by one."""
    touched: set[Window] = set()
    event, flow = models.Event, models.Flow
    move_events = (
        update(event)
        .where(event.id == bindparam("m_pk"))
        .values(day=bindparam("m_day"), hour=bindparam("m_hour"))
    )
    # Flows are found by their window first (they have no index on their event).
    move_flows = (
        update(flow)
        .where(
            flow.city_id == city_id,
            flow.day == bindparam("m_old_day"),
            flow.hour == bindparam("m_old_hour"),
            flow.event_pk == bindparam("m_pk"),
        )
        .values(day=bindparam("m_day"), hour=bindparam("m_hour"))
    )
    rows = session.execute(
        select(event.id, event.time, event.day, event.hour).where(
            event.city_id == city_id, tuple_(event.day, event.hour).in_(hours)
        )
    ).all()
    moves = []
    for pk, time, day, hour in rows:
        new_day, new_hour = _hour_in(_utc(time), zone)
        if (new_day, new_hour) != (day, hour):
            moves.append(
                {
                    "m_pk": pk, "m_day": new_day, "m_hour": new_hour,
                    "m_old_day": day, "m_old_hour": hour,
                }
            )  # fmt: skip
            touched |= {(city_id, day, hour), (city_id, new_day, new_hour)}
    if moves:
        connection = session.connection()
        connection.execute(
            move_events, [{k: m[k] for k in ("m_pk", "m_day", "m_hour")} for m in moves]
        )
        connection.execute(move_flows, moves)
    return touched


# Sites ----------------------------------------------------------------------------------------


def update_site(
    session: Session, city: models.City, site: models.Site, patch: api.SitePatch, actor: str
) -> models.Site:
    name = f"/{city.slug}/{site.slug}"
    _not_retired(site, f"site {name!r}")
    given = patch.model_dump(mode="json", exclude_unset=True)
    target = given.pop("city", None)
    if target is not None and target != city.slug:
        raise Invalid(
            f"site {name!r} cannot move to city {target!r}: its stored events name "
            f"{city.slug!r} in their source and are counted there. Register the site in "
            f"{target!r} and retire this one (DELETE it)"
        )
    before, after = _diff(site, given, ("latitude", "longitude"))
    for field, value in after.items():
        setattr(site, field, value)
    if after:
        log(
            session, city_id=city.id, entry="site", name=name, action="update",
            before=before, after=after, actor=actor,
        )  # fmt: skip
    session.flush()
    return site


# Devices --------------------------------------------------------------------------------------


# Derives the flows of a device's stored events again (`fabcity.ingest.rebuild.rederive_device`:
# it knows which events a correction took out of the count); returns the hours that changed.
Rederive = Callable[[Session, int, models.Device], set[Window]]


def update_device(
    session: Session,
    city: models.City,
    site: models.Site,
    device: models.Device,
    patch: api.DevicePatch,
    actor: str,
    rederive: Rederive,
) -> models.Device:
    name = f"/{city.slug}/{site.slug}/{device.slug}"
    given = patch.model_dump(exclude_unset=True)
    if {"kind", "settings", "adapter"} & given.keys():
        # Before anything is read of the device: ingest of its city waits from here
        # (`hold_cities`), and a change of its kind or settings that committed since it was
        # read is read, so its events are derived again from what the device is now.
        entries.hold_cities(session, [city.slug], shared=False)
        session.refresh(device, with_for_update=True)
    _not_retired(device, f"device {name!r}")
    adapter = given.get("adapter") or device.adapter
    if "settings" in given or "adapter" in given:
        settings = given.get("settings")
        if settings is None:
            settings = dict(device.settings or {})
        stored = entries.checked_settings(session, adapter, settings, device.id)
        given["settings"] = stored
    before, after = _diff(device, given, ())
    if not after:
        return device
    for field, value in after.items():
        setattr(device, field, value)
    session.flush()
    marked = 0
    if {"kind", "settings"} & after.keys():
        derived = rederive(session, city.id, device)
        windows.mark_dirty(session, derived)
        marked = len(derived)
    log(
        session, city_id=city.id, entry="device", name=name, action="update",
        before=before, after=after, actor=actor, windows_marked=marked,
    )  # fmt: skip
    return device


# Retiring and deleting ----------------------------------------------------------------------


def _hold_for_removal(session: Session, city: models.City) -> None:
    """Before asking whether stored events name an entry: a batch under way may be storing
    the first one that does (it resolved the entry, and has not committed). The check waits
    for it, and later batches wait for the removal (and then find the entry gone)."""
    entries.hold_cities(session, [city.slug], shared=False)


def _refers(session: Session, *where: Any) -> bool:
    return session.scalar(select(models.Event.id).where(*where).limit(1)) is not None


def _retire(
    session: Session,
    row: models.City | models.Site | models.Device,
    entry: str,
    name: str,
    city_id: int,
    actor: str,
) -> api.Removal:
    if row.retired_at is None:
        row.retired_at = _now()
        log(
            session, city_id=city_id, entry=entry, name=name, action="retire", before=None,
            after={"retired_at": row.retired_at.isoformat()}, actor=actor,
        )  # fmt: skip
        session.flush()
    return api.Removal(
        entry=name,
        outcome="retired",
        retired_at=row.retired_at,
        detail=f"stored events refer to {name}: it is kept with them, and its new events are "
        "refused",
    )


def _deleted(name: str) -> api.Removal:
    return api.Removal(entry=name, outcome="deleted", detail=f"nothing referred to {name}")


def _revoke_keys(
    session: Session, city: str, site: str | None = None, device: str | None = None
) -> None:
    key = models.ApiKey
    where = [key.city == city, key.revoked_at.is_(None)]
    if site is not None:
        where.append(key.site == site)
    if device is not None:
        where.append(key.device == device)
    session.execute(update(key).where(*where).values(revoked_at=_now()))


def remove_device(
    session: Session, city: models.City, site: models.Site, device: models.Device, actor: str
) -> api.Removal:
    name = f"/{city.slug}/{site.slug}/{device.slug}"
    _hold_for_removal(session, city)
    if _refers(session, models.Event.city_id == city.id, models.Event.device_id == device.id):
        return _retire(session, device, "device", name, city.id, actor)
    _delete_devices(session, [device.id])
    _revoke_keys(session, city.slug, site.slug, device.slug)
    log(
        session, city_id=city.id, entry="device", name=name, action="delete",
        before=_fields(device, ("name", "kind", "adapter", "settings")), after=None,
        actor=actor,
    )  # fmt: skip
    return _deleted(name)


def _delete_devices(session: Session, ids: list[int]) -> None:
    if ids:
        session.execute(delete(models.DeviceState).where(models.DeviceState.device_id.in_(ids)))
        session.execute(delete(models.Device).where(models.Device.id.in_(ids)))


def _fields(row: object, names: Sequence[str]) -> dict[str, Any]:
    return {n: getattr(row, n) for n in names}


def remove_site(session: Session, city: models.City, site: models.Site, actor: str) -> api.Removal:
    name = f"/{city.slug}/{site.slug}"
    _hold_for_removal(session, city)
    if _refers(session, models.Event.city_id == city.id, models.Event.site_id == site.id):
        return _retire(session, site, "site", name, city.id, actor)
    _delete_sites(session, [site.id])
    _revoke_keys(session, city.slug, site.slug)
    log(
        session, city_id=city.id, entry="site", name=name, action="delete",
        before=_fields(site, ("name", "kind", "latitude", "longitude")), after=None,
        actor=actor,
    )  # fmt: skip
    return _deleted(name)


def _delete_sites(session: Session, ids: list[int]) -> None:
    """Sites without events, their devices (which have none either) and their OKW records."""
    if not ids:
        return
    devices = list(session.scalars(select(models.Device.id).where(models.Device.site_id.in_(ids))))
    _delete_devices(session, devices)
    session.execute(delete(models.Facility).where(models.Facility.site_id.in_(ids)))
    session.execute(delete(models.Site).where(models.Site.id.in_(ids)))


def remove_city(session: Session, city: models.City, actor: str) -> api.Removal:
    name = f"/{city.slug}"
    _hold_for_removal(session, city)
    if _refers(session, models.Event.city_id == city.id):
        return _retire(session, city, "city", name, city.id, actor)
    hooks = session.scalar(
        select(func.count())
        .select_from(models.Subscription)
        .where(models.Subscription.city_id == city.id)
    )
    if hooks:
        raise Conflict(
            f"{hooks} webhook subscription(s) follow city {city.slug!r}; delete them first"
        )
    sites = list(session.scalars(select(models.Site.id).where(models.Site.city_id == city.id)))
    _delete_sites(session, sites)
    for table in (models.CityStatistics, models.Notice):
        session.execute(delete(table).where(and_(table.city_id == city.id)))
    _revoke_keys(session, city.slug)
    log(
        session, city_id=city.id, entry="city", name=name, action="delete",
        before=_fields(city, ("name", "country", "timezone", "population")), after=None,
        actor=actor,
    )  # fmt: skip
    session.delete(city)
    session.flush()
    return _deleted(name)


# Resources ------------------------------------------------------------------------------------


def add_resource(session: Session, body: api.ResourceIn, actor: str) -> models.Resource:
    """A resource of the city's own (`plywood`): its unit is its dimension's canonical one."""
    if session.get(models.Resource, body.name) is not None:
        raise Conflict(f"resource {body.name!r} exists; see /v1/resources")
    if body.mfa_category is not None and body.dimension != "mass":
        raise Invalid(
            f"mfa_category applies to mass resources only: the material accounts count "
            f"kilograms, and a {body.dimension} resource stands outside them"
        )
    resource = models.Resource(
        name=body.name,
        unit=CANONICAL[body.dimension],
        dimension=body.dimension,
        mfa_category=body.mfa_category,
        secondary=body.secondary,
    )
    session.add(resource)
    log(
        session, city_id=None, entry="resource", name=body.name, action="create", before=None,
        after=body.model_dump(), actor=actor,
    )  # fmt: skip
    return resource


def get_device(session: Session, site: models.Site, slug: str) -> models.Device:
    device = session.scalar(
        select(models.Device).where(models.Device.site_id == site.id, models.Device.slug == slug)
    )
    if device is None:
        raise NotFound(f"no device {slug!r} at site {site.slug!r}")
    return device
