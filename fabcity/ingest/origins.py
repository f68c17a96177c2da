"""Who an event's `source` names: its city, site and device, resolved against the registry
once per batch, or kept across batches by a long-lived writer while the registry stands still
(`Known`)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.errors import Invalid, NotFound
from fabcity.flows.derive import DeviceInfo, ResourceInfo
from fabcity.registry import entries


@dataclass(frozen=True)
class Origin:
    """Who an event's `source` names, resolved against the registry."""

    city_id: int
    timezone: str
    site_id: int
    device: DeviceInfo | None
    # Read for every event stored: a field, not a property.
    device_id: int | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "device_id", self.device.id if self.device else None)


def parse_source(source: str) -> tuple[str, str, str | None]:
    """`/{city}/{site}` or `/{city}/{site}/{device}` into its parts."""
    parts = source.split("/")
    if parts[0] != "" or len(parts) not in (3, 4) or not all(parts[1:]):
        raise Invalid(
            f"source {source!r} must be '/{{city}}/{{site}}' or '/{{city}}/{{site}}/{{device}}'"
        )
    return parts[1], parts[2], parts[3] if len(parts) == 4 else None


def city_of(source: str) -> str:
    """The city a source names (`parse_source`'s first part), read without checking the rest:
    a source that names none is returned whole."""
    return source.split("/", 2)[1] if source[:1] == "/" else source


def retired(source: str, what: str, when: datetime) -> str:
    """Why an event naming a retired entry is refused."""
    return (
        f"source {source!r}: {what} was retired on {when.date().isoformat()}; its new events "
        "are refused (those stored before still count)"
    )


class Known:
    """The sources resolved and the resources read, kept across the batches of one writer (a
    bridge, an API process) for as long as the registry's version stands still.

    Resolving a batch's sources took two queries and 3.6 ms a batch of 1,000 (cProfile of the
    bridge's commit), the resources one more: a third of the bridge's own work per event. The
    version (`entries.registry_version`) is raised by database triggers at every write that
    changes what ingest reads (migrations 0014 and 0018: a device's kind, settings, retirement
    or deletion, a city's zone, retirement or deletion, a site's retirement or deletion, any
    resource), so one
    primary-key read per batch says whether what is kept still holds. The version is read
    before anything is looked up, in the batch's own transaction: a change that commits in
    between leaves newer answers under the older version, which the next batch then drops.

    Only found sources are kept. A refusal ("no such site") is looked up again at every batch,
    because registering a site raises no version.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: int | None = None
        self._origins: dict[str, Origin] = {}
        self._resources: dict[str, ResourceInfo] | None = None

    def current(self, session: Session) -> tuple[dict[str, Origin], dict[str, ResourceInfo]]:
        """What still holds at the registry's version read now: the sources known (to be
        added to) and the resources."""
        version = entries.registry_version(session)
        with self._lock:
            if version != self._version:
                # New objects, not cleared ones: another writer's batch may hold the old.
                self._version, self._origins, self._resources = version, {}, None
            origins, resources = self._origins, self._resources
        if resources is None:
            resources = entries.resource_infos(session)
            with self._lock:
                if self._version == version:
                    self._resources = resources
        return origins, resources


class OriginResolver:
    """Resolves sources to registry ids, remembering answers for the life of one batch, and
    found ones in `shared` (a `Known`'s) beyond it."""

    def __init__(self, session: Session, shared: dict[str, Origin] | None = None) -> None:
        self._session = session
        self._known: dict[str, Origin | str] = {}
        self._shared: dict[str, Origin] = {} if shared is None else shared

    def prime(self, sources: Iterable[str]) -> None:
        """Look up many sources at once: two queries for a batch instead of one or two per
        source (a bridge's batch holds many devices). What is not found here is looked up
        again by `resolve`, which says why."""
        wanted: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
        for source in sources:
            if source in self._known or source in self._shared:
                continue
            try:
                city_slug, site_slug, device_slug = parse_source(source)
            except Invalid:
                continue
            wanted.setdefault((city_slug, site_slug), []).append((source, device_slug))
        pairs = list(wanted)
        for start in range(0, len(pairs), 500):
            self._prime_sites(pairs[start : start + 500], wanted)

    def _prime_sites(
        self,
        pairs: list[tuple[str, str]],
        wanted: dict[tuple[str, str], list[tuple[str, str | None]]],
    ) -> None:
        sites = self._session.execute(
            select(
                models.City.slug, models.Site.slug, models.City.id, models.City.timezone,
                models.Site.id, models.City.retired_at, models.Site.retired_at,
            )
            .join(models.Site, models.Site.city_id == models.City.id)
            .where(tuple_(models.City.slug, models.Site.slug).in_(pairs))
        ).all()  # fmt: skip
        by_site = {row[4]: (row[2], row[3]) for row in sites}
        devices: dict[tuple[int, str], DeviceInfo] = {}
        gone: dict[tuple[int, str], datetime] = {}
        keys = [
            (row[4], device)
            for row in sites
            for _, device in wanted[(row[0], row[1])]
            if device is not None
        ]
        if keys:
            found = self._session.execute(
                select(
                    models.Device.site_id, models.Device.slug, models.Device.id,
                    models.Device.kind, models.Device.settings, models.Device.retired_at,
                ).where(tuple_(models.Device.site_id, models.Device.slug).in_(keys))
            ).all()  # fmt: skip
            devices = {(r[0], r[1]): DeviceInfo(r[2], r[3], dict(r[4] or {})) for r in found}
            gone = {(r[0], r[1]): r[5] for r in found if r[5] is not None}
        for city_slug, site_slug, _, _, site_id, city_retired, site_retired in sites:
            city_id, timezone = by_site[site_id]
            for source, device_slug in wanted[(city_slug, site_slug)]:
                if city_retired is not None:
                    self._known[source] = retired(source, f"city {city_slug!r}", city_retired)
                elif site_retired is not None:
                    self._known[source] = retired(source, f"site {site_slug!r}", site_retired)
                elif device_slug is not None and (site_id, device_slug) in gone:
                    when = gone[(site_id, device_slug)]
                    self._known[source] = retired(source, f"device {device_slug!r}", when)
                elif device_slug is None:
                    self._shared[source] = Origin(city_id, timezone, site_id, None)
                elif (site_id, device_slug) in devices:
                    device = devices[(site_id, device_slug)]
                    self._shared[source] = Origin(city_id, timezone, site_id, device)

    def resolve(self, source: str) -> Origin:
        found = self._shared.get(source)
        if found is not None:
            return found
        hit = self._known.get(source)
        if hit is None:
            try:
                hit = self._shared[source] = self._lookup(source)
            except (Invalid, NotFound) as exc:
                hit = self._known[source] = exc.detail
        if isinstance(hit, str):
            raise Invalid(hit)
        return hit

    def _lookup(self, source: str) -> Origin:
        city_slug, site_slug, device_slug = parse_source(source)
        row = self._session.execute(
            select(
                models.City.id, models.City.timezone, models.Site.id, models.City.retired_at,
                models.Site.retired_at,
            )
            .join(models.Site, models.Site.city_id == models.City.id)
            .where(models.City.slug == city_slug, models.Site.slug == site_slug)
        ).first()  # fmt: skip
        if row is None:
            raise NotFound(
                f"source {source!r}: no site {site_slug!r} in city {city_slug!r}; register it first"
            )
        city_id, timezone, site_id, city_retired, site_retired = row
        if city_retired is not None:
            raise Invalid(retired(source, f"city {city_slug!r}", city_retired))
        if site_retired is not None:
            raise Invalid(retired(source, f"site {site_slug!r}", site_retired))
        device = None
        if device_slug is not None:
            found = self._session.execute(
                select(
                    models.Device.id, models.Device.kind, models.Device.settings,
                    models.Device.retired_at,
                ).where(models.Device.site_id == site_id, models.Device.slug == device_slug)
            ).first()  # fmt: skip
            if found is None:
                raise NotFound(
                    f"source {source!r}: no device {device_slug!r} at site {site_slug!r}; "
                    "register it first"
                )
            if found[3] is not None:
                raise Invalid(retired(source, f"device {device_slug!r}", found[3]))
            device = DeviceInfo(found[0], found[1], dict(found[2] or {}))
        return Origin(city_id, timezone, site_id, device)
