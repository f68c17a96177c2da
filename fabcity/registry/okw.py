"""Sites from Open Know-Where (OKW) facility records (Internet of Production Alliance).

A record names a facility, where it is, whether it is open and to whom, its equipment (make,
model, process) and its typical materials (with where the supplier is), and who verified the
record and when (`record_data`). Records arrive as YAML (one or several documents, each a
record or a list of records) or JSON (a record or a list).

Each record is checked on its own: a bad one is reported with what to fix, the rest imported.
A record is matched on its stable key (its `id` or URL, else its name), so importing it again
updates the site it made before.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.errors import Invalid
from schemas.api import Rejected
from schemas.standards import ImportedRecord, ImportResult

# OKW spells these as prose ("Temporary Closure"); we keep them as snake-case words.
STATUSES = ("active", "planned", "temporary_closure", "closed")
ACCESS_TYPES = ("public", "restricted", "restricted_with_public_hours", "membership")
MAX_NAME = 200
MAX_SLUG = 63


@dataclass(frozen=True)
class FacilityRecord:
    key: str
    name: str
    slug: str
    latitude: float | None
    longitude: float | None
    status: str | None
    access_type: str | None
    address: dict[str, Any] | None
    equipment: list[dict[str, Any]]
    materials: list[dict[str, Any]]
    verified_by: str | None
    verified_at: datetime | None
    record_data: dict[str, Any] | None


# Reading documents ---------------------------------------------------------------------------


def load_records(text: str | bytes, media_type: str = "application/yaml") -> list[Any]:
    """The records in a YAML or JSON document, in order. YAML is a superset of JSON, so JSON
    sent as YAML reads the same."""
    try:
        if media_type.endswith("json"):
            docs: list[Any] = [json.loads(text)]
        else:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (ValueError, yaml.YAMLError) as exc:
        raise Invalid(f"the document cannot be read as {_format(media_type)}: {exc}") from exc
    records: list[Any] = []
    for doc in docs:
        records.extend(doc if isinstance(doc, list) else [doc])
    return records


def _format(media_type: str) -> str:
    return "JSON" if media_type.endswith("json") else "YAML"


# One record ----------------------------------------------------------------------------------


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:MAX_SLUG].rstrip("-")


def parse_record(raw: Any) -> FacilityRecord:
    """A record checked and normalised; `Invalid` says which field is wrong and why."""
    if not isinstance(raw, dict):
        raise Invalid(f"a facility record must be a mapping, not {type(raw).__name__}")
    name = raw.get("name", raw.get("title"))
    if not isinstance(name, str) or not name.strip():
        raise Invalid("`name` is missing: every facility needs a name")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise Invalid(f"`name` is {len(name)} characters long; at most {MAX_NAME}")
    slug = slugify(name)
    if not slug:
        raise Invalid(f"`name` {name!r} has no letters or digits to make a site slug from")
    location = raw.get("location")
    if isinstance(location, list):
        # OKW allows several locations; the site is placed at the first.
        location = location[0] if location else None
    if location is not None and not isinstance(location, dict):
        raise Invalid("`location` must be a mapping with `address` and `gps_coordinates`")
    latitude, longitude = _coordinates(location or {})
    address = (location or {}).get("address")
    if isinstance(address, str):
        address = {"text": address}
    if address is not None and not isinstance(address, dict):
        raise Invalid("`location.address` must be a mapping or a text")
    record_data = raw.get("record_data")
    if record_data is not None and not isinstance(record_data, dict):
        raise Invalid("`record_data` must be a mapping")
    record_data = record_data or {}
    return FacilityRecord(
        key=_key(raw, slug),
        name=name,
        slug=slug,
        latitude=latitude,
        longitude=longitude,
        status=_choice(raw, "facility_status", STATUSES),
        access_type=_choice(raw, "access_type", ACCESS_TYPES),
        address=_jsonable(address) if address else None,
        equipment=_items(raw, "equipment", _equipment),
        materials=_items(raw, "typical_materials", _material),
        verified_by=_agent(record_data.get("verified_by"), "record_data.verified_by"),
        verified_at=_when(record_data.get("date_verified"), "record_data.date_verified"),
        record_data=_jsonable(record_data) if record_data else None,
    )


def _key(raw: dict[str, Any], slug: str) -> str:
    for field in ("id", "@id", "url", "uri"):
        value = raw.get(field)
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()
    return f"name:{slug}"


def _coordinates(location: dict[str, Any]) -> tuple[float | None, float | None]:
    value = location.get("gps_coordinates")
    if value is None and "latitude" in location:
        value = {"latitude": location.get("latitude"), "longitude": location.get("longitude")}
    if value is None:
        return None, None
    pair: list[Any]
    if isinstance(value, str):
        pair = [p for p in re.split(r"[,\s;]+", value.strip()) if p]
    elif isinstance(value, list | tuple):
        pair = list(value)
    elif isinstance(value, dict):
        pair = [
            value.get("latitude", value.get("lat")),
            value.get("longitude", value.get("lon", value.get("lng"))),
        ]
    else:
        pair = []
    try:
        if len(pair) != 2:
            raise ValueError
        lat, lon = float(pair[0]), float(pair[1])
    except (TypeError, ValueError):
        raise Invalid(
            f"`location.gps_coordinates` {value!r} is not a latitude and a longitude in "
            "decimal degrees, e.g. '41.3968, 2.1943'"
        ) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise Invalid(
            f"`location.gps_coordinates` ({lat}, {lon}) is off the globe: latitude within "
            "±90 and longitude within ±180"
        )
    return lat, lon


def _choice(raw: dict[str, Any], field: str, allowed: Sequence[str]) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    word = re.sub(r"[\s-]+", "_", str(value).strip().lower())
    if word not in allowed:
        raise Invalid(f"`{field}` {value!r} is not one of: {', '.join(allowed)}")
    return word


def _items(
    raw: dict[str, Any], field: str, read: Callable[[dict[str, Any], str], dict[str, Any]]
) -> list[dict[str, Any]]:
    value = raw.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"`{field}` must be a list")
    out = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise Invalid(f"`{where}` must be a mapping")
        out.append(read(item, where))
    return out


def _text(item: dict[str, Any], *fields: str) -> str | None:
    for field in fields:
        value = item.get(field)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _equipment(item: dict[str, Any], where: str) -> dict[str, Any]:
    kind = _text(item, "equipment_type")
    if kind is None:
        raise Invalid(f"`{where}.equipment_type` is missing (e.g. '3D printer', 'laser cutter')")
    process = item.get("manufacturing_process", item.get("manufacturing_processes"))
    processes = process if isinstance(process, list) else [] if process is None else [process]
    return {
        "equipment_type": kind,
        "manufacturer": _text(item, "manufacturer", "make"),
        "model": _text(item, "model"),
        "manufacturing_process": [str(p) for p in processes],
    }


def _material(item: dict[str, Any], where: str) -> dict[str, Any]:
    kind = _text(item, "material_type")
    if kind is None:
        raise Invalid(f"`{where}.material_type` is missing (e.g. 'PLA', 'plywood')")
    return {
        "material_type": kind,
        "manufacturer": _text(item, "manufacturer", "brand"),
        "supplier_location": _place(item.get("supplier_location")),
    }


def _place(value: Any) -> str | None:
    """A supplier location as one line: OKW gives a text or a location with an address."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        address = value.get("address", value)
        if isinstance(address, dict):
            parts = [
                address.get(k) for k in ("locality", "city", "region", "country") if address.get(k)
            ]
            if parts:
                return ", ".join(str(p) for p in parts)
        if isinstance(address, str):
            return address
    return json.dumps(_jsonable(value), sort_keys=True)


def _agent(value: Any, where: str) -> str | None:
    """OKW agents are a name or a person/organisation with a `name`."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"`{where}` must be a name or a mapping with a `name`")
    return value.strip()[:300]


def _when(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    # YAML reads an unquoted 2024-05-01 as a date already. Kept in UTC: SQLite drops offsets.
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise Invalid(f"`{where}` {value!r} is not a date (ISO 8601, e.g. 2026-05-01)")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


# The repository ------------------------------------------------------------------------------


def upsert(
    session: Session, city: models.City, record: FacilityRecord, now: datetime
) -> tuple[models.Site, bool]:
    """The site of `record`, created or updated; and whether it was created."""
    facility = session.scalar(
        select(models.Facility).where(
            models.Facility.city_id == city.id, models.Facility.okw_id == record.key
        )
    )
    created = facility is None
    if facility is None:
        site = _site_for(session, city, record)
        facility = models.Facility(site_id=site.id, city_id=city.id, okw_id=record.key)
        session.add(facility)
    else:
        site = session.get_one(models.Site, facility.site_id)
    site.name = record.name
    # A record without coordinates does not erase the ones the site already has.
    if record.latitude is not None:
        site.latitude, site.longitude = record.latitude, record.longitude
    facility.status = record.status
    facility.access_type = record.access_type
    facility.address = record.address
    facility.equipment = record.equipment
    facility.materials = record.materials
    facility.verified_by = record.verified_by
    facility.verified_at = record.verified_at
    facility.record_data = record.record_data
    facility.imported_at = now
    session.flush()
    return site, created


def _site_for(session: Session, city: models.City, record: FacilityRecord) -> models.Site:
    """A site registered by hand under the record's slug is adopted; one that another record
    made is not, and the new site gets a numbered slug instead."""
    taken = set(
        session.scalars(
            select(models.Site.slug).where(
                models.Site.city_id == city.id, models.Site.slug.startswith(record.slug)
            )
        )
    )
    linked = set(
        session.scalars(
            select(models.Site.slug)
            .join(models.Facility, models.Facility.site_id == models.Site.id)
            .where(models.Site.city_id == city.id)
        )
    )
    slug = record.slug
    if slug in taken and slug not in linked:
        return session.scalars(
            select(models.Site).where(models.Site.city_id == city.id, models.Site.slug == slug)
        ).one()
    n = 2
    while slug in taken:
        suffix = f"-{n}"
        slug = record.slug[: MAX_SLUG - len(suffix)].rstrip("-") + suffix
        n += 1
    site = models.Site(city_id=city.id, slug=slug, name=record.name, kind="fablab")
    session.add(site)
    session.flush()
    return site


def import_records(
    session: Session, city: models.City, records: Sequence[Any], now: datetime | None = None
) -> ImportResult:
    """Import every good record; each bad one is reported by its index with what to fix."""
    now = now or datetime.now(UTC)
    result = ImportResult()
    for index, raw in enumerate(records):
        try:
            record = parse_record(raw)
        except Invalid as exc:
            result.rejected.append(Rejected(index=index, error=_label(raw, exc.detail)))
            continue
        # A savepoint per record: one that fails in the database leaves the others.
        with session.begin_nested():
            site, created = upsert(session, city, record, now)
        result.imported.append(
            ImportedRecord(index=index, key=record.key, id=site.slug, created=created)
        )
    return result


def _label(raw: Any, error: str) -> str:
    name = raw.get("name", raw.get("title")) if isinstance(raw, dict) else None
    return f"{name}: {error}" if isinstance(name, str) and name.strip() else error


def list_facilities(
    session: Session, city: models.City
) -> list[tuple[models.Site, models.Facility]]:
    rows = session.execute(
        select(models.Site, models.Facility)
        .join(models.Facility, models.Facility.site_id == models.Site.id)
        .where(models.Site.city_id == city.id)
        .order_by(models.Site.slug)
    )
    return [(site, facility) for site, facility in rows.tuples()]
