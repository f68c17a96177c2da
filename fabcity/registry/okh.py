"""Designs from Open Know-How (OKH) manifests: OKH v1 (YAML) and OKH-LOSH (TOML).

What a city needs from a manifest: the title, the version, the licence (which decides whether
things made of it count as made from an open design), the OSHWA certification where there is
one, and the mass of the product and of its parts (which turns "made N of this design" into
kilograms, then `modelled`).

Neither standard has a mass field for the whole product in every version, so we read, on the
module and on each part: `mass-kg` (kg), `mass-g` (g; OKH-LOSH's 3D-printed parts), and `mass`
(a number is grams, as OKH-LOSH; a text may carry its unit, '1.2 kg'). A product with no mass of
its own weighs the sum of its parts when every part has one.

The inputs of the Material Circularity Indicator are our extension: a `circularity` mapping
(TOML table) with `F_R, F_U, F_S, C_R, C_U, C_C, C_E, E_C, E_F, L_ratio, U_ratio`.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from fabcity.core.errors import Invalid, one_line
from schemas.standards import Circularity

OKH_V1 = "okh-v1"
OKH_LOSH = "okh-losh"

# OSHWA certification ids: a country code and six digits (US002173, DE000101).
OSHWA_UID = re.compile(r"\b([A-Za-z]{2}\d{6})\b")
_MASS_TEXT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(kg|g|mg|t)?\s*$")
_TO_KG = {"kg": 1.0, "g": 1e-3, "mg": 1e-6, "t": 1e3}


@dataclass(frozen=True)
class Part:
    name: str
    mass_kg: float | None


@dataclass(frozen=True)
class Manifest:
    standard: str
    title: str
    version: str | None
    licence: str | None
    licences: list[str]
    licensor: str | None
    oshwa_uid: str | None
    mass_kg: float | None
    parts: list[Part] = field(default_factory=list)
    circularity: dict[str, float] | None = None
    url: str | None = None


def load(text: str | bytes, kind: str) -> dict[str, Any]:
    """A manifest document; `kind` is a file suffix or a media type (toml, yaml, json)."""
    kind = kind.lower()
    try:
        if "toml" in kind:
            raw = text.decode() if isinstance(text, bytes) else text
            doc: Any = tomllib.loads(raw)
        elif "json" in kind:
            doc = json.loads(text)
        else:
            doc = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors.
        raise Invalid(f"the manifest cannot be read: {exc}") from exc
    if not isinstance(doc, dict):
        raise Invalid("a manifest must be a mapping of fields")
    return doc


def standard_of(doc: dict[str, Any]) -> str:
    """OKH-LOSH manifests carry `okhv`; OKH v1 names the design `title`, OKH-LOSH `name`."""
    if "okhv" in doc or ("name" in doc and "title" not in doc):
        return OKH_LOSH
    return OKH_V1


def parse(doc: dict[str, Any]) -> Manifest:
    """What a city needs from a manifest; `Invalid` says which field is wrong and why."""
    standard = standard_of(doc)
    title_field = "name" if standard == OKH_LOSH else "title"
    title = doc.get(title_field)
    if not isinstance(title, str) or not title.strip():
        raise Invalid(f"`{title_field}` is missing: every {standard} manifest names its design")
    licences = _licences(doc.get("license", doc.get("licence")))
    parts = _parts(doc.get("part", doc.get("parts")))
    mass_kg = _mass(doc, "")
    if mass_kg is None and parts and all(p.mass_kg is not None for p in parts):
        mass_kg = sum(p.mass_kg for p in parts if p.mass_kg is not None)
    version = doc.get("version")
    url = doc.get("manifest-url")
    return Manifest(
        standard=standard,
        title=title.strip()[:300],
        version=None if version is None else str(version)[:100],
        licence=licences[0] if licences else None,
        licences=licences,
        licensor=_licensor(doc.get("licensor")),
        oshwa_uid=_oshwa(doc),
        mass_kg=mass_kg,
        parts=parts,
        circularity=_circularity(doc.get("circularity")),
        url=url if isinstance(url, str) and url.strip() else None,
    )


def _licences(value: Any) -> list[str]:
    """The licences given, the hardware licence first. OKH v1 splits them by what they cover
    (`hardware`, `documentation`, `software`); OKH-LOSH gives one SPDX expression."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, dict):
        out = []
        for key in ("hardware", "documentation", "software"):
            given = value.get(key)
            if given is not None:
                if not isinstance(given, str):
                    raise Invalid(f"`license.{key}` must be an SPDX licence id")
                out.append(given.strip())
        unknown = sorted(set(value) - {"hardware", "documentation", "software"})
        if unknown:
            raise Invalid(
                f"`license` has {', '.join(unknown)}; use hardware, documentation, software"
            )
        return [licence for licence in out if licence]
    raise Invalid("`license` must be an SPDX licence id or a mapping of hardware/documentation")


def _licensor(value: Any) -> str | None:
    if value is None:
        return None
    people = value if isinstance(value, list) else [value]
    names = []
    for person in people:
        name = person.get("name") if isinstance(person, dict) else person
        if not isinstance(name, str):
            raise Invalid("`licensor` must be a name, a person with a `name`, or a list of them")
        names.append(name.strip())
    return ", ".join(n for n in names if n)[:300] or None


def _oshwa(doc: dict[str, Any]) -> str | None:
    """The OSHWA certification id: given as such, in an OKH-LOSH `attestation` URL
    (certification.oshwa.org/us002173.html), or in an OKH v1 `standards-used` entry."""
    given = doc.get("oshwa-uid", doc.get("oshwa_uid"))
    if given is not None:
        found = OSHWA_UID.fullmatch(str(given).strip())
        if found is None:
            raise Invalid(f"`oshwa-uid` {given!r} is not an OSHWA id (two letters, six digits)")
        return found.group(1).upper()
    candidates: list[str] = []
    attestation = doc.get("attestation")
    for item in attestation if isinstance(attestation, list) else [attestation]:
        if isinstance(item, str) and "oshwa" in item.lower():
            candidates.append(item)
    standards = doc.get("standards-used")
    if isinstance(standards, list):
        for entry in standards:
            text = json.dumps(entry, default=str)
            if "oshwa" in text.lower():
                candidates.append(text)
    for text in candidates:
        hit = OSHWA_UID.search(text)
        if hit:
            return hit.group(1).upper()
    return None


def _mass(item: dict[str, Any], where: str) -> float | None:
    """Mass in kg from `mass-kg`, `mass-g` or `mass` (grams, or a text with its unit)."""
    for key, unit in (("mass-kg", "kg"), ("mass-g", "g"), ("mass", "g")):
        value = item.get(key)
        if value is None:
            continue
        label = f"`{where}{key}`"
        if isinstance(value, bool):
            raise Invalid(f"{label} must be a number")
        if isinstance(value, int | float):
            kg = float(value) * _TO_KG[unit]
        elif isinstance(value, str) and (m := _MASS_TEXT.match(value)):
            kg = float(m.group(1)) * _TO_KG[m.group(2) or unit]
        else:
            raise Invalid(f"{label} {value!r} is not a mass: a number, or a text like '250 g'")
        if not 0 <= kg < float("inf"):
            raise Invalid(f"{label} must be zero or more")
        return kg
    return None


def _parts(value: Any) -> list[Part]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid("`part` must be a list of parts")
    parts = []
    for i, item in enumerate(value):
        where = f"part[{i}]."
        if not isinstance(item, dict):
            raise Invalid(f"`part[{i}]` must be a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise Invalid(f"`{where}name` is missing")
        parts.append(Part(name.strip(), _mass(item, where)))
    return parts


def _circularity(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid("`circularity` must be a mapping of MCI inputs (F_R, F_U, …)")
    try:
        return Circularity.model_validate(value).model_dump()
    except ValidationError as exc:
        found = one_line(exc.errors(include_url=False), "circularity")
        raise Invalid(f"`circularity`: {found}") from exc
