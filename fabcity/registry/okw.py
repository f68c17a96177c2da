"""Sites from Open Know-Where (OKW) facility records (Internet of Production Alliance).

A record names a facility, where it is, whether it is open and to whom, its equipment (make,
model, process, the materials it works) and its typical materials (with where the supplier
is), and who verified the record and when (`record_data`). Records arrive as YAML (one or
several documents, each a record or a list of records) or JSON (a record or a list).

Two forms are read: OKW v1 (2021), a flat record with `name`, `location`, `equipment`…, and the
Alliance's 2024 data schema, in which it publishes its map: a record of `facility` (`name`,
`url`, `facility_id`), `geocoding`, `address` and `region`. The 2024 form is read as the v1
record it describes.

Each record is checked on its own: a bad one is reported with what to fix, the rest imported.
A value that does not map (an access type we do not know) is dropped with a note, not the
record. A record is matched to a site on its `id` (or URL), then on its name and location, so
importing it again, or importing a record of a site registered by hand, updates that site
instead of adding another; the answer says what each record was matched on.

The materials a site works (its typical materials and those its equipment works) become its
known resources: `PLA` is filament, `plywood` wood, `https://en.wikipedia.org/wiki/Aluminium`
metal.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.errors import Invalid
from schemas.api import Rejected
from schemas.standards import ImportedRecord, ImportResult

# OKW spells these as prose ("Temporary Closure"); we keep them as snake-case words.
STATUSES = ("active", "planned", "temporary_closure", "closed")
ACCESS_TYPES = (
    "public",
    "restricted",
    "restricted_with_public_hours",
    "shared_space",
    "membership",
)
# The words records use for them, beside the standard's own.
_STATUS_WORDS = {
    "open": "active",
    "operational": "active",
    "operating": "active",
    "in_planning": "planned",
    "coming_soon": "planned",
    "under_construction": "planned",
    "temporarily_closed": "temporary_closure",
    "temporary_closed": "temporary_closure",
    "paused": "temporary_closure",
    "permanently_closed": "closed",
    "inactive": "closed",
    "defunct": "closed",
}
_ACCESS_WORDS = {
    "open": "public",
    "open_access": "public",
    "open_to_the_public": "public",
    "public_access": "public",
    "free": "public",
    "private": "restricted",
    "staff_only": "restricted",
    "internal": "restricted",
    "public_hours": "restricted_with_public_hours",
    "open_days": "restricted_with_public_hours",
    "restricted_with_open_hours": "restricted_with_public_hours",
    "shared": "shared_space",
    "shared_workspace": "shared_space",
    "coworking": "shared_space",
    "co_working": "shared_space",
    "coworking_space": "shared_space",
    "rental": "shared_space",
    "members": "membership",
    "member": "membership",
    "members_only": "membership",
    "membership_required": "membership",
    "subscription": "membership",
}
MAX_NAME = 200
MAX_SLUG = 63
# Two records of one name are one site when their coordinates are this close: geocoders place
# a building anywhere on its block, and a campus spans a few hundred metres.
SAME_PLACE_M = 1000.0
Matched = Literal["id", "name and location", "name"]


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
    notes: list[str] = field(default_factory=list)
    """What was dropped from the record, and why."""

    @property
    def has_id(self) -> bool:
        """Whether the record names itself (an id or URL), rather than by its name alone."""
        return not self.key.startswith("name:")


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
    if isinstance(raw.get("facility"), dict):
        raw = from_2024(raw)
    name = raw.get("name", raw.get("title"))
    if not isinstance(name, str) or not name.strip():
        raise Invalid("`name` is missing: every facility needs a name")
    name = " ".join(name.split())
    if len(name) > MAX_NAME:
        raise Invalid(f"`name` is {len(name)} characters long; at most {MAX_NAME}")
    key = _key(raw)
    slug = slugify(name) or _fallback_slug(key)
    if not slug:
        raise Invalid(f"`name` {name!r} has no letters or digits to make a site slug from")
    location = _first(raw.get("location"))
    if location is not None and not isinstance(location, dict):
        raise Invalid("`location` must be a mapping with `address` and `gps_coordinates`")
    latitude, longitude = _coordinates(location or {}, "location.gps_coordinates")
    address = (location or {}).get("address")
    if isinstance(address, str):
        address = {"text": address}
    if address is not None and not isinstance(address, dict):
        raise Invalid("`location.address` must be a mapping or a text")
    record_data = raw.get("record_data")
    if record_data is not None and not isinstance(record_data, dict):
        raise Invalid("`record_data` must be a mapping")
    record_data = record_data or {}
    notes: list[str] = []
    return FacilityRecord(
        key=key or f"name:{slug}",
        name=name,
        slug=slug,
        latitude=latitude,
        longitude=longitude,
        status=_choice(raw, "facility_status", STATUSES, _STATUS_WORDS, notes),
        access_type=_choice(raw, "access_type", ACCESS_TYPES, _ACCESS_WORDS, notes),
        address=_jsonable(address) if address else None,
        equipment=_items(raw, "equipment", _equipment),
        materials=_items(raw, "typical_materials", _material),
        verified_by=_agent(record_data.get("verified_by"), "record_data.verified_by"),
        verified_at=_when(record_data.get("date_verified"), "record_data.date_verified"),
        record_data=_jsonable(record_data) if record_data else None,
        notes=notes,
    )


def from_2024(raw: dict[str, Any]) -> dict[str, Any]:
    """The OKW v1 record a record of the 2024 data schema describes: its `facility` names
    it, `geocoding` places it, `address` and `region` say where it is."""
    facility = raw["facility"]
    record: dict[str, Any] = {
        k: facility[k] for k in ("name", "description", "url") if facility.get(k) is not None
    }
    if facility.get("facility_id") is not None:
        record["id"] = facility["facility_id"]
    address: dict[str, Any] = {}
    for part, fields in (
        (
            raw.get("address"),
            (
                ("street", "street"),
                ("number", "number"),
                ("extended", "text"),
                ("zip_code", "postcode"),
            ),
        ),
        (
            raw.get("region"),
            (("city_town", "city"), ("state_region", "region"), ("country", "country")),
        ),
    ):
        if isinstance(part, dict):
            for given, ours in fields:
                value = part.get(given)
                if isinstance(value, str | int) and str(value).strip():
                    address[ours] = str(value).strip()
    location: dict[str, Any] = {}
    if address:
        location["address"] = address
    geocoding = raw.get("geocoding")
    if isinstance(geocoding, dict) and geocoding.get("latitude") is not None:
        location["gps_coordinates"] = {
            "latitude": geocoding.get("latitude"),
            "longitude": geocoding.get("longitude"),
        }
    if location:
        record["location"] = location
    return record


def _first(value: Any) -> Any:
    # OKW allows several locations; a site is placed at the first.
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _key(raw: dict[str, Any]) -> str | None:
    for field_name in ("id", "@id", "url", "uri"):
        value = raw.get(field_name)
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()
    return None


def _fallback_slug(key: str | None) -> str:
    """A slug for a name without Latin letters or digits (法贝实验室): from the record's id,
    so that a re-import gets the same one."""
    if key is None:
        return ""
    tail = slugify(key.rstrip("/").rsplit("/", 1)[-1])
    return f"site-{tail}"[:MAX_SLUG].rstrip("-") if tail else ""


def _coordinates(location: dict[str, Any], where: str) -> tuple[float | None, float | None]:
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
            f"`{where}` {value!r} is not a latitude and a longitude in "
            "decimal degrees, e.g. '41.3968, 2.1943'"
        ) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise Invalid(
            f"`{where}` ({lat}, {lon}) is off the globe: latitude within "
            "±90 and longitude within ±180"
        )
    return lat, lon


def _word(value: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(value).strip().lower()).strip("_")


def _choice(
    raw: dict[str, Any],
    field_name: str,
    allowed: Sequence[str],
    words: dict[str, str],
    notes: list[str],
) -> str | None:
    """One of `allowed`, read generously ("Shared space", "members only"); a value that is
    none of them is dropped with a note, and the rest of the record kept."""
    value = raw.get(field_name)
    if value is None or not str(value).strip():
        return None
    word = _word(value)
    word = words.get(word, word)
    if word not in allowed:
        notes.append(f"`{field_name}` {value!r} is not one of: {', '.join(allowed)}; left unset")
        return None
    return word


def _items(
    raw: dict[str, Any], field_name: str, read: Callable[[Any, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    value = raw.get(field_name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"`{field_name}` must be a list")
    return [read(item, f"{field_name}[{i}]") for i, item in enumerate(value)]


def _text(item: dict[str, Any], *fields: str) -> str | None:
    for field_name in fields:
        value = item.get(field_name)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _equipment(item: Any, where: str) -> dict[str, Any]:
    # The standard names equipment by its Wikipedia URL: a bare text is its type.
    if isinstance(item, str) and item.strip():
        item = {"equipment_type": item}
    if not isinstance(item, dict):
        raise Invalid(f"`{where}` must be a mapping, or the equipment type as a text")
    kind = _text(item, "equipment_type")
    if kind is None:
        raise Invalid(f"`{where}.equipment_type` is missing (e.g. '3D printer', 'laser cutter')")
    process = item.get("manufacturing_process", item.get("manufacturing_processes"))
    processes = process if isinstance(process, list) else [] if process is None else [process]
    worked = item.get("materials_worked", item.get("material_worked"))
    worked = worked if isinstance(worked, list) else [] if worked is None else [worked]
    return {
        "equipment_type": kind,
        "manufacturer": _text(item, "manufacturer", "make", "brand"),
        "model": _text(item, "model"),
        "manufacturing_process": [str(p) for p in processes],
        "materials_worked": [
            _material(m, f"{where}.materials_worked[{i}]") for i, m in enumerate(worked)
        ],
    }


def _material(item: Any, where: str) -> dict[str, Any]:
    # The standard names a material by its Wikipedia URL: a bare text is its type.
    if isinstance(item, str) and item.strip():
        item = {"material_type": item}
    if not isinstance(item, dict):
        raise Invalid(f"`{where}` must be a mapping, or the material type as a text")
    kind = _text(item, "material_type")
    if kind is None:
        raise Invalid(f"`{where}.material_type` is missing (e.g. 'PLA', 'plywood')")
    line, latitude, longitude = _place(item.get("supplier_location"), f"{where}.supplier_location")
    return {
        "material_type": kind,
        "resource": resource_of(kind),
        "manufacturer": _text(item, "manufacturer", "brand"),
        "supplier_location": line,
        "supplier_latitude": latitude,
        "supplier_longitude": longitude,
    }


_ADDRESS_PARTS = (
    "text",
    "number",
    "street",
    "district",
    "locality",
    "city",
    "region",
    "postcode",
    "country",
)


def _place(value: Any, where: str) -> tuple[str | None, float | None, float | None]:
    """A supplier location (an OKW Location, or a text) as one line and its coordinates."""
    value = _first(value)
    if value is None:
        return None, None, None
    if isinstance(value, str):
        return value.strip() or None, None, None
    if not isinstance(value, dict):
        raise Invalid(f"`{where}` must be a location (address, gps_coordinates) or a text")
    address = value.get("address", value)
    line: str | None = None
    if isinstance(address, str):
        line = address.strip() or None
    elif isinstance(address, dict):
        parts = [str(address[k]).strip() for k in _ADDRESS_PARTS if address.get(k) is not None]
        line = ", ".join(p for p in parts if p) or None
    if line is None:
        directions = value.get("directions")
        line = str(directions).strip() if directions else None
    latitude, longitude = _coordinates(value, f"{where}.gps_coordinates")
    return line, latitude, longitude


# Materials to resources ----------------------------------------------------------------------

# Words (whole, without case) that say which resource a material is. A phrase is tried before
# its words; "recycled" makes a plastic recycled_plastic and a metal scrap_metal.
_RESOURCE_WORDS: dict[str, tuple[str, ...]] = {
    "filament": (
        "filament", "pla", "abs", "petg", "tpu", "tpe", "asa", "polylactic acid",
        "acrylonitrile butadiene styrene", "thermoplastic polyurethane",
    ),
    "plastic": (
        "plastic", "plastics", "hdpe", "ldpe", "pet", "pe", "pp", "ps", "pvc", "nylon",
        "polyamide", "polycarbonate", "polypropylene", "polyethylene", "polystyrene",
        "acrylic", "pmma", "acetate", "cellulose acetate", "polyvinyl chloride",
        "high density polyethylene", "low density polyethylene", "polyethylene terephthalate",
        "poly methyl methacrylate",
    ),
    "resin": ("resin", "epoxy", "photopolymer", "polyester resin"),
    "wood": (
        "wood", "plywood", "mdf", "softwood", "hardwood", "timber", "lumber", "bamboo", "osb",
        "veneer", "cork", "particle board", "medium density fibreboard",
        "medium density fiberboard",
    ),
    "paper": ("paper", "cardboard", "paperboard", "corrugated fiberboard"),
    "textile": (
        "textile", "textiles", "fabric", "cotton", "wool", "felt", "leather", "linen", "yarn",
        "denim",
    ),
    "metal": (
        "metal", "metals", "iron", "steel", "stainless steel", "mild steel", "aluminium",
        "aluminum", "copper", "zinc", "brass", "bronze", "titanium", "tin", "sheet metal",
    ),
    "electronics": ("electronics", "pcb", "pcbs", "printed circuit board"),
    "glass": ("glass",),
    "concrete": ("concrete", "cement", "geopolymer", "geopolymers"),
    "stone": ("stone", "rock", "clay", "ceramic", "ceramics", "marble", "granite"),
    "food": ("food",),
    "compost": ("compost",),
}  # fmt: skip
_RECYCLED = {"filament": "recycled_plastic", "plastic": "recycled_plastic", "metal": "scrap_metal"}
_PHRASES = sorted(
    ((phrase.split(), resource) for resource, ps in _RESOURCE_WORDS.items() for phrase in ps),
    key=lambda item: -len(item[0]),
)


def resource_of(material_type: str) -> str | None:
    """The resource a material is (`PLA` filament, a Wikipedia URL of aluminium metal), or
    None when no word of it names one."""
    text = material_type.strip()
    if "://" in text:
        # https://en.wikipedia.org/wiki/Polylactic_acid names the material by its last part.
        text = unquote(urlsplit(text).path.rstrip("/").rsplit("/", 1)[-1]).replace("_", " ")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    words = re.findall(r"[a-z0-9]+", ascii_text)
    for phrase, resource in _PHRASES:
        n = len(phrase)
        if any(words[i : i + n] == phrase for i in range(len(words) - n + 1)):
            return _RECYCLED.get(resource, resource) if "recycled" in words else resource
    return None


def known_resources(
    equipment: Sequence[dict[str, Any]], materials: Sequence[dict[str, Any]]
) -> list[str]:
    """The resources a site works: of its typical materials and its equipment's."""
    worked = [m for e in equipment for m in e.get("materials_worked", [])]
    return sorted({m["resource"] for m in (*materials, *worked) if m.get("resource")})


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
    session: Session,
    city: models.City,
    record: FacilityRecord,
    now: datetime,
    sites: SiteIndex | None = None,
) -> tuple[models.Site, bool, Matched | None]:
    """The site of `record`, created or updated; whether it was created; and what it was
    matched on (None for a new site). `sites`: the city's sites, read once for many
    records."""
    sites = sites or SiteIndex(session, city)
    facility = session.scalar(
        select(models.Facility).where(
            models.Facility.city_id == city.id, models.Facility.okw_id == record.key
        )
    )
    matched: Matched | None = None
    if facility is not None:
        site = session.get_one(models.Site, facility.site_id)
        matched = "id" if record.has_id else "name"
    else:
        found = sites.same_site(record)
        if found is None:
            site = _new_site(session, city, record, sites)
        else:
            site_id, matched = found
            site = session.get_one(models.Site, site_id)
            facility = session.get(models.Facility, site_id)
        if facility is None:
            facility = models.Facility(site_id=site.id, city_id=city.id, okw_id=record.key)
            session.add(facility)
        elif record.has_id and facility.okw_id.startswith("name:"):
            # The site's record now has an id: the next import finds it by that. A site
            # another record's id holds keeps it (the two records are one place).
            facility.okw_id = record.key
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
    sites.put(site, facility.okw_id)
    return site, matched is None, matched


def same_name(a: str, b: str) -> bool:
    """Names that differ only in case, accents, spacing or punctuation ("Ateneu de
    Fabricació", "ATENEU DE FABRICACIO")."""
    return _name_key(a) == _name_key(b)


def _name_key(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name.casefold())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return " ".join(re.findall(r"\w+", plain))


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres (haversine, on a sphere of the Earth's mean radius)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(min(1.0, h)))


@dataclass
class _SiteRow:
    id: int
    slug: str
    name: str
    latitude: float | None
    longitude: float | None
    okw_id: str | None


class SiteIndex:
    """A city's sites by name and slug, read once for an import and kept up to date by it:
    matching a record against every site one query at a time made importing the 2,237
    records of the Alliance's map take minutes."""

    def __init__(self, session: Session, city: models.City) -> None:
        rows = session.execute(
            select(
                models.Site.id,
                models.Site.slug,
                models.Site.name,
                models.Site.latitude,
                models.Site.longitude,
                models.Facility.okw_id,
            )
            .outerjoin(models.Facility, models.Facility.site_id == models.Site.id)
            .where(models.Site.city_id == city.id)
        ).tuples()
        self._rows: dict[int, _SiteRow] = {}
        self._by_name: dict[str, set[int]] = {}
        self._by_slug: dict[str, int] = {}
        for row in rows:
            self._add(_SiteRow(*row))

    def _add(self, row: _SiteRow) -> None:
        self._rows[row.id] = row
        self._by_name.setdefault(_name_key(row.name), set()).add(row.id)
        self._by_slug[row.slug] = row.id

    def put(self, site: models.Site, okw_id: str) -> None:
        """The site as an import left it."""
        old = self._rows.get(site.id)
        if old is not None:
            self._by_name.get(_name_key(old.name), set()).discard(site.id)
        self._add(_SiteRow(site.id, site.slug, site.name, site.latitude, site.longitude, okw_id))

    def slug_taken(self, slug: str) -> bool:
        return slug in self._by_slug

    def same_site(self, record: FacilityRecord) -> tuple[int, Matched] | None:
        """The site of the city that is the record's: of the same name (or slug) and, where
        both have coordinates, within SAME_PLACE_M. Without coordinates to compare, the name
        alone matches only a site that no record with an id has claimed: two records with
        ids and one name may well be two places."""
        ids = set(self._by_name.get(_name_key(record.name), ()))
        if record.slug in self._by_slug:
            ids.add(self._by_slug[record.slug])
        by_location: list[tuple[float, int]] = []
        by_name: list[int] = []
        for row in (self._rows[i] for i in ids):
            if (
                record.latitude is not None
                and record.longitude is not None
                and row.latitude is not None
                and row.longitude is not None
            ):
                metres = distance_m(
                    (record.latitude, record.longitude), (row.latitude, row.longitude)
                )
                if metres <= SAME_PLACE_M:
                    by_location.append((metres, row.id))
            elif row.okw_id is None or row.okw_id.startswith("name:"):
                by_name.append(row.id)
        if by_location:
            return min(by_location)[1], "name and location"
        if by_name:
            return min(by_name), "name"
        return None


def _new_site(
    session: Session, city: models.City, record: FacilityRecord, sites: SiteIndex
) -> models.Site:
    """A new site under the record's slug, numbered when another site has it."""
    slug, n = record.slug, 2
    while sites.slug_taken(slug):
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
    sites = SiteIndex(session, city)
    for index, raw in enumerate(records):
        try:
            record = parse_record(raw)
        except Invalid as exc:
            result.rejected.append(Rejected(index=index, error=_label(raw, exc.detail)))
            continue
        # A savepoint per record: one that fails in the database leaves the others.
        with session.begin_nested():
            site, created, matched = upsert(session, city, record, now, sites)
        result.imported.append(
            ImportedRecord(
                index=index,
                key=record.key,
                id=site.slug,
                created=created,
                matched=matched,
                notes=record.notes,
            )
        )
    return result


def _label(raw: Any, error: str) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("facility"), dict):
        raw = raw["facility"]
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
