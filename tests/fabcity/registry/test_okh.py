"""Designs from Open Know-How manifests (OKH v1 YAML, OKH-LOSH TOML), and which are open."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.errors import Invalid
from fabcity.core.models import Design
from fabcity.registry import designs, okh
from tests.fixtures import OKH

BASE = "https://designs.example.org/okh/"


def _manifest(name: str) -> okh.Manifest:
    path = OKH / name
    return okh.parse(okh.load(path.read_bytes(), path.suffix))


def _import_all(factory: sessionmaker[Session]) -> tuple[list[str], dict[int, str]]:
    files = sorted(OKH.iterdir())
    with transaction(factory) as s:
        result = designs.import_many(s, [(f.suffix, f.read_bytes(), BASE + f.name) for f in files])
    return [r.key for r in result.imported], {
        r.index: f"{files[r.index].name}: {r.error}" for r in result.rejected
    }


@pytest.mark.parametrize(
    ("expression", "is_open"),
    [
        ("CERN-OHL-S-2.0", True),
        ("cern-ohl-w-2.0", True),
        ("TAPR-OHL-1.0", True),
        ("SHL-2.1", True),
        ("CC-BY-SA-4.0", True),
        ("CC-BY-SA-3.0-DE", True),
        ("GPL-3.0-or-later", True),
        ("GPL-2.0+", True),
        ("Apache-2.0 WITH LLVM-exception", True),
        ("CC-BY-NC-4.0", False),
        ("CC-BY-ND-4.0", False),
        ("LicenseRef-Proprietary", False),
        ("CC-BY-NC-4.0 OR MIT", True),
        ("CC-BY-NC-4.0 AND MIT", False),
        ("(MIT AND CC-BY-4.0) OR LicenseRef-Mine", True),
        ("(MIT AND LicenseRef-Mine) OR CC-BY-NC-4.0", False),
        ("(MIT", False),
        ("https://example.org/my-licence", False),
    ],
)
def test_open_licences(expression: str, is_open: bool) -> None:
    assert designs.is_open_licence(expression) is is_open


def test_okh_v1_manifest() -> None:
    m = _manifest("bracket.yml")
    assert (m.standard, m.title, m.version) == ("okh-v1", "Shelf bracket", "1.2.0")
    assert m.licences == ["CERN-OHL-S-2.0", "CC-BY-SA-4.0"]
    assert m.licence == "CERN-OHL-S-2.0"
    assert m.licensor == "Jo Maker"
    assert m.oshwa_uid == "US002173"
    assert [(p.name, p.mass_kg) for p in m.parts] == [("Bracket body", 0.085), ("Wall plug", 0.015)]
    # No mass of its own: the sum of its parts, since every part has one.
    assert m.mass_kg == pytest.approx(0.1)
    assert m.circularity == {
        "F_R": 0.3, "F_U": 0.1, "F_S": 0.0, "C_R": 0.5, "C_U": 0.1, "C_C": 0.0, "C_E": 0.0,
        "E_C": 0.8, "E_F": 0.9, "L_ratio": 1.5, "U_ratio": 1.0,
    }  # fmt: skip


def test_okh_losh_manifest() -> None:
    m = _manifest("stool.toml")
    assert (m.standard, m.title, m.version) == ("okh-losh", "Three-leg stool", "2.0.1")
    assert m.licences == ["CERN-OHL-W-2.0 OR MIT"]
    assert m.oshwa_uid == "DE000101"
    # OKH-LOSH `mass` is in grams; the module's own mass wins over its parts' sum (2.2 kg).
    assert m.mass_kg == 3.2
    assert [(p.name, p.mass_kg) for p in m.parts] == [("Seat", 1.7), ("Leg", 0.5)]
    assert m.circularity is None


def test_import_keeps_good_manifests_and_says_why_bad_ones_failed(
    factory: sessionmaker[Session],
) -> None:
    imported, rejected = _import_all(factory)
    assert imported == [BASE + n for n in ("bracket.yml", "desk-lamp.yml", "stool.toml")]
    assert len(rejected) == 4
    reasons = sorted(rejected.values())
    assert reasons[0].startswith("broken.toml: the manifest cannot be read")
    assert (
        reasons[1] == "heavy-words.toml: `mass-g` 'quite heavy' is not a mass: "
        "a number, or a text like '250 g'"
    )
    assert reasons[2].startswith("impossible-loop.yml: `circularity`:")
    assert "F_R + F_U + F_S exceeds 1" in reasons[2]
    assert reasons[3] == "no-title.yml: `title` is missing: every okh-v1 manifest names its design"

    with transaction(factory) as s:
        rows = {d.url.removeprefix(BASE): d for d in s.scalars(select(Design))}
        lamp, stool, bracket = rows["desk-lamp.yml"], rows["stool.toml"], rows["bracket.yml"]
        assert (lamp.is_open, lamp.mass_kg, lamp.licence, lamp.parts) == (
            False, None, "CC-BY-NC-SA-4.0", []
        )  # fmt: skip
        assert (stool.is_open, stool.mass_kg, stool.standard) == (True, 3.2, "okh-losh")
        assert stool.parts == [{"name": "Seat", "mass_kg": 1.7}, {"name": "Leg", "mass_kg": 0.5}]
        assert (bracket.is_open, bracket.oshwa_uid) == (True, "US002173")
        assert bracket.circularity is not None and bracket.circularity["E_F"] == 0.9


def test_reimport_of_a_url_updates_the_design(factory: sessionmaker[Session]) -> None:
    url = BASE + "stool.toml"
    text = (OKH / "stool.toml").read_text()
    with transaction(factory) as s:
        first, created = designs.import_manifest(s, okh.load(text, "toml"), url)
    newer = text.replace('version = "2.0.1"', 'version = "2.1.0"').replace("3200", "2900")
    newer = newer.replace('"CERN-OHL-W-2.0 OR MIT"', '"LicenseRef-Closed"')
    with transaction(factory) as s:
        again, created_again = designs.import_manifest(s, okh.load(newer, "toml"), url)
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    with transaction(factory) as s:
        assert s.scalar(select(func.count()).select_from(Design)) == 1
        design = designs.by_url(s, url)
        assert design is not None
        assert (design.version, design.mass_kg, design.is_open) == ("2.1.0", 2.9, False)


def test_a_manifest_needs_a_url() -> None:
    doc = okh.load((OKH / "desk-lamp.yml").read_bytes(), "yaml")
    with pytest.raises(Invalid, match="say where the manifest is published"):
        designs.import_manifest(None, doc, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"title": "X", "license": {"hardware": "MIT", "firmware": "MIT"}}, "has firmware"),
        ({"title": "X", "license": 3}, "`license` must be"),
        ({"title": "X", "part": {"name": "p"}}, "`part` must be a list"),
        ({"title": "X", "part": [{"mass-g": 3}]}, "`part[0].name` is missing"),
        ({"title": "X", "part": [{"name": "p", "mass-kg": -1}]}, "must be zero or more"),
        ({"title": "X", "mass": True}, "`mass` must be a number"),
        ({"title": "X", "oshwa-uid": "certified!"}, "is not an OSHWA id"),
        ({"title": "X", "circularity": {"F_X": 1}}, "F_X"),
        ({"title": "X", "licensor": 42}, "`licensor` must be"),
    ],
)
def test_malformed_fields_say_what_to_fix(doc: dict[str, object], error: str) -> None:
    with pytest.raises(Invalid) as caught:
        okh.parse(doc)
    assert error in caught.value.detail
