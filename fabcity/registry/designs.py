"""The design registry: which licences are open, and the queries on `designs`.

A design counts as open when every licence its manifest gives (hardware, documentation,
software) is an open hardware or open source licence. Non-commercial and no-derivatives
licences (CC-BY-NC-*, CC-BY-ND-*) are not: others could not make and sell or adapt the thing,
which is what OSHWA's definition of open hardware asks. A design whose manifest gives no
licence, or one that maps to no SPDX licence, is neither: its openness is unknown (null).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from license_expression import AND, OR, LicenseWithExceptionSymbol
from sqlalchemy import select
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.db import get_or_not_found
from fabcity.core.errors import Invalid
from fabcity.registry import okh
from fabcity.rollups import windows
from schemas.api import Rejected
from schemas.standards import ImportedRecord, ImportResult

# SPDX ids, matched whole and without case. A trailing `+` ("or later") is dropped first.
OPEN_LICENCES: tuple[str, ...] = (
    r"CERN-OHL-(1\.1|1\.2|P-2\.0|S-2\.0|W-2\.0)",
    r"TAPR-OHL-1\.0",
    r"SHL-(0\.5|0\.51|2\.0|2\.1)",  # Solderpad Hardware Licence
    r"CC0-1\.0",
    r"CC-BY(-SA)?-(1\.0|2\.0|2\.5|3\.0|4\.0)(-[A-Z]{2,3})?",  # ported versions end in a country
    r"(A|L)?GPL-(2\.0|2\.1|3\.0)(-ONLY|-OR-LATER)?",
    r"MIT",
    r"APACHE-2\.0",
    r"BSD-(2|3)-CLAUSE",
    r"0BSD",
    r"ISC",
    r"MPL-2\.0",
    r"EUPL-1\.(1|2)",
    r"OFL-1\.1",
    r"UNLICENSE",
    r"ZLIB",
)
_OPEN = re.compile("|".join(f"(?:{p})" for p in OPEN_LICENCES), re.IGNORECASE)
# Licences that say in words that the design is closed. Anything else that maps to no SPDX
# licence is unknown, not closed: a licence we cannot read may well be an open one.
_CLOSED_WORDS = re.compile(
    r"^(proprietary|all rights reserved|closed( source)?)\.?$", re.IGNORECASE
)


def is_open_licence(expression: str) -> bool:
    """Whether an SPDX licence expression leaves the design open: `A OR B` is open when one
    of them is, `A AND B` when both are; `WITH` exceptions do not change the answer. An
    expression that cannot be read is not open."""
    parsed = okh.parse_expression(expression)
    return parsed is not None and _open(parsed)


def _open(node: Any) -> bool:
    if isinstance(node, LicenseWithExceptionSymbol):
        node = node.license_symbol
    if isinstance(node, OR):
        return any(_open(arg) for arg in node.args)
    if isinstance(node, AND):
        return all(_open(arg) for arg in node.args)
    return _OPEN.fullmatch(str(node.key).removesuffix("+")) is not None


def licence_verdict(licence: okh.Licence) -> bool | None:
    """Open (True), closed (False), or unknown (None) when it maps to no SPDX licence and
    does not say it is closed."""
    if licence.spdx is not None:
        return is_open_licence(licence.spdx)
    if _CLOSED_WORDS.match(licence.given.strip()):
        return False
    return None


def openness(licences: Sequence[okh.Licence]) -> bool | None:
    """Whether a design is open: every licence it gives must be. One closed licence closes
    it; otherwise one unknown licence, or none at all, leaves it unknown (None)."""
    verdicts = [licence_verdict(licence) for licence in licences]
    if False in verdicts:
        return False
    if not verdicts or None in verdicts:
        return None
    return True


# The repository ------------------------------------------------------------------------------


# A URL is whole without spaces or control characters: one with them is not a URL a browser
# or a client would follow as given.
_NOT_IN_URLS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def manifest_url(url: str) -> str:
    """The URL a manifest is published at, checked: `http` or `https` with a host. The
    dashboard and clients follow it as a link, so `javascript:alert(1)` (or `data:`, `file:`)
    would run or read what the person never meant to."""
    url = url.strip()
    if not url:
        raise Invalid("a design needs the URL its manifest is published at")
    if len(url) > 2048:
        raise Invalid("the manifest URL is longer than 2048 characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket, say
        raise Invalid(f"the manifest URL is not a URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise Invalid(f"the manifest URL must be http(s)://host/…, not {url[:80]!r}")
    if _NOT_IN_URLS.search(url):
        raise Invalid("the manifest URL holds spaces or control characters; percent-encode them")
    return url


def upsert(
    session: Session, url: str, manifest: okh.Manifest, now: datetime | None = None
) -> tuple[models.Design, bool]:
    """The design at `url`, created or updated from its manifest; and whether it was created."""
    url = manifest_url(url)
    design = session.scalar(select(models.Design).where(models.Design.url == url))
    created = design is None
    if design is None:
        design = models.Design(url=url)
        session.add(design)
    design.title = manifest.title
    design.version = manifest.version
    licences = okh.licences_of(manifest)
    # The hardware licence as SPDX, and as the manifest wrote it.
    hardware = licences[0] if licences else None
    # An expression too long for the column is not cut short (a cut one says something
    # else); the licence text keeps it.
    spdx = hardware.spdx if hardware else None
    design.licence = spdx if spdx and len(spdx) <= 200 else None
    design.licence_text = hardware.given[:500] if hardware else None
    design.licensor = manifest.licensor
    design.is_open = openness(licences)
    design.oshwa_uid = manifest.oshwa_uid
    design.mass_kg = manifest.mass_kg
    design.parts = [{"name": p.name, "mass_kg": p.mass_kg} for p in manifest.parts]
    design.circularity = manifest.circularity
    design.standard = manifest.standard
    design.updated_at = now or datetime.now(UTC)
    session.flush()
    # Its licence and mass feed open_design_share and modelled masses of the days it was made.
    windows.mark_design_dirty(session, url)
    return design, created


def import_manifest(
    session: Session, doc: dict[str, Any], url: str | None, now: datetime | None = None
) -> tuple[models.Design, bool]:
    """Read one manifest document and store it under `url` (else the manifest's own
    `manifest-url`)."""
    manifest = okh.parse(doc)
    where = url or manifest.url
    if not where:
        raise Invalid(
            "say where the manifest is published: give its URL (API `?url=`, CLI "
            "`--url-prefix`) or a `manifest-url` field; flows name designs by that URL"
        )
    return upsert(session, where, manifest, now)


def import_many(
    session: Session, items: Sequence[tuple[str, str | bytes, str | None]]
) -> ImportResult:
    """Import `(kind, text, url)` manifests; each bad one is reported by its index."""
    now = datetime.now(UTC)
    result = ImportResult()
    for index, (kind, text, url) in enumerate(items):
        try:
            doc = okh.load(text, kind)
            with session.begin_nested():
                design, created = import_manifest(session, doc, url, now)
        except Invalid as exc:
            result.rejected.append(Rejected(index=index, error=exc.detail))
            continue
        result.imported.append(
            ImportedRecord(index=index, key=design.url, id=str(design.id), created=created)
        )
    return result


def get(session: Session, design_id: int) -> models.Design:
    return get_or_not_found(
        session, models.Design, design_id, f"no design {design_id}; list them at /v1/designs"
    )


def by_url(session: Session, url: str) -> models.Design | None:
    return session.scalar(select(models.Design).where(models.Design.url == url))


def list_designs(session: Session, open_only: bool = False) -> list[models.Design]:
    query = select(models.Design).order_by(models.Design.title, models.Design.id)
    if open_only:
        query = query.where(models.Design.is_open.is_(True))
    return list(session.scalars(query))
