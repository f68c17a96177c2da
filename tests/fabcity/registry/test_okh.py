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
    files = sorted(f for f in OKH.iterdir() if f.suffix in (".toml", ".yml"))
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
    assert imported == [
        BASE + n
        for n in (
            "bracket.yml",
            "desk-lamp.yml",
            "ohloom.toml",
            "okh-losh-template.toml",
            "stool.toml",
        )
    ]
    assert len(rejected) == 4
    reasons = sorted(rejected.values())
    assert reasons[0].startswith("broken.toml: the manifest cannot be read")
    assert (
        reasons[1] == "heavy-words.toml: `mass-g` 'quite heavy' is not a mass: "
        "a number, a text like '250 g', or a table {value, unit}"
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
        ohloom, template = rows["ohloom.toml"], rows["okh-losh-template.toml"]
        assert (ohloom.is_open, ohloom.licence, ohloom.mass_kg) == (True, "CC-BY-SA-4.0", 2.36)
        # OKH-LOSH's template keeps its placeholder licence: it names no licence we know.
        assert (template.is_open, template.licence, template.licence_text) == (
            None, None, "the-SPDX-ID"
        )  # fmt: skip
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


# OKH-LOSH v1 mass tables ----------------------------------------------------------------------


def test_losh_v1_mass_tables_are_read() -> None:
    """OHLOOM's okh.toml gives each of its 18 parts `mass = {value, unit}` in grams and no
    mass of its own: the loom weighs their sum, 2,360 g (30 + 30 + 85 + 30 + 65 + 5 + 5 + 65
    + 65 + 65 + 60 + 160 + 550 + 65 + 700 + 15 + 35 + 330)."""
    loom = _manifest("ohloom.toml")
    assert (loom.standard, loom.title, loom.version) == ("okh-losh", "OHLOOM", "0.10.0")
    assert len(loom.parts) == 18
    assert (loom.parts[0].name, loom.parts[0].mass_kg) == ("Clamp Ring", 0.03)
    assert (loom.parts[-1].name, loom.parts[-1].mass_kg) == ("WarpClothBeam", 0.33)
    assert loom.mass_kg == pytest.approx(2.36)
    # The template gives the module's own mass in kg, which wins over its one part's 330 g.
    template = _manifest("okh-losh-template.toml")
    assert (template.mass_kg, [p.mass_kg for p in template.parts]) == (50.33, [0.33])


@pytest.mark.parametrize(
    ("mass", "error"),
    [
        ({"value": "heavy", "unit": "g"}, "`mass.value` 'heavy' is not a mass"),
        ({"unit": "kg"}, "`mass` is a table without `value`"),
        ({"value": 3, "unit": "lb"}, "`mass.unit` 'lb' is not a unit of mass: use kg, g, mg, t"),
        ({"value": -3, "unit": "kg"}, "`mass.value` must be zero or more"),
    ],
)
def test_bad_mass_tables_say_what_to_fix(mass: dict[str, object], error: str) -> None:
    with pytest.raises(Invalid) as caught:
        okh.parse({"okhv": "OKH-LOSHv1.0", "name": "X", "mass": mass})
    assert error in caught.value.detail


def test_mass_tables_in_words_and_other_units() -> None:
    doc = {"name": "X", "mass": {"value": "1.5", "unit": "Kilograms"}}
    assert okh.parse(doc).mass_kg == 1.5
    assert okh.parse({"name": "X", "mass": {"value": 2, "unit": "t"}}).mass_kg == 2000


# Licences -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "spdx"),
    [
        ("CERN OHL v1.2", "CERN-OHL-1.2"),
        ("Creative Commons Attribution-ShareAlike 4.0 International", "CC-BY-SA-4.0"),
        ("CC BY-SA 4.0", "CC-BY-SA-4.0"),
        ("CERN Open Hardware Licence Version 2 - Strongly Reciprocal", "CERN-OHL-S-2.0"),
        ("GNU General Public License v3.0 or later", "GPL-3.0-or-later"),
        ("MIT License", "MIT"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("cern-ohl-w-2.0", "CERN-OHL-W-2.0"),
        ("gpl-2.0+", "GPL-2.0-or-later"),
        ("CERN OHL v1.2 OR MIT", "CERN-OHL-1.2 OR MIT"),
        ("Apache-2.0 WITH LLVM-exception", "Apache-2.0 WITH LLVM-exception"),
        ("https://creativecommons.org/licenses/by-sa/4.0/", "CC-BY-SA-4.0"),
        ("https://creativecommons.org/licenses/by-nc/3.0/de/", "CC-BY-NC-3.0-DE"),
        ("https://spdx.org/licenses/CERN-OHL-P-2.0.html", "CERN-OHL-P-2.0"),
        ("LicenseRef-Mine", "LicenseRef-Mine"),
        ("the-SPDX-ID", None),
        ("Proprietary", None),
        ("(MIT", None),
        ("https://example.org/my-licence", None),
    ],
)
def test_licences_map_to_spdx(given: str, spdx: str | None) -> None:
    assert okh.spdx_expression(given) == spdx


@pytest.mark.parametrize(
    ("licence", "is_open"),
    [
        ({"hardware": "CERN OHL v1.2"}, True),
        ({"hardware": "Creative Commons Attribution-ShareAlike 4.0 International"}, True),
        ({"hardware": "CERN OHL v1.2", "documentation": "CC BY-NC 4.0"}, False),
        ({"hardware": "Proprietary"}, False),
        ({"hardware": "All rights reserved"}, False),
        ({"hardware": "Our own licence, see LICENSE.txt"}, None),
        ({"hardware": "MIT", "documentation": "some words"}, None),
        ({"hardware": "CC-BY-NC-4.0", "documentation": "some words"}, False),
        (None, None),
    ],
)
def test_a_licence_that_is_not_known_open_is_not_judged_closed(
    licence: dict[str, str] | None, is_open: bool | None
) -> None:
    doc: dict[str, object] = {"title": "X"}
    if licence is not None:
        doc["license"] = licence
    assert designs.openness(okh.licences_of(okh.parse(doc))) is is_open


def test_the_licence_is_kept_as_written_and_as_spdx(factory: sessionmaker[Session]) -> None:
    doc = {"title": "Loom", "license": {"hardware": "CERN OHL v1.2"}}
    none = {"title": "Unlicensed loom"}
    with transaction(factory) as s:
        loom, _ = designs.import_manifest(s, doc, BASE + "loom.yml")
        bare, _ = designs.import_manifest(s, none, BASE + "bare.yml")
    with transaction(factory) as s:
        loom = s.get_one(Design, loom.id)
        assert (loom.licence, loom.licence_text, loom.is_open) == (
            "CERN-OHL-1.2", "CERN OHL v1.2", True
        )  # fmt: skip
        bare = s.get_one(Design, bare.id)
        assert (bare.licence, bare.licence_text, bare.is_open) == (None, None, None)
        assert [d.title for d in designs.list_designs(s, open_only=True)] == ["Loom"]


def test_a_tab_after_a_key_is_white_space_as_yaml_says() -> None:
    # OKH-LOSH's 2020 sample of the MPPT 1210 HUS writes `IPC: <tab>`: YAML counts the tab
    # as white space; PyYAML alone refuses the document.
    doc = okh.load(b"name: MPPT\nIPC: \t\n  G05F 1/67\nlicense: CC-BY-SA-4.0\n", "yaml")
    assert (doc["IPC"], okh.parse(doc).licence) == ("G05F 1/67", "CC-BY-SA-4.0")
    # A tab that indents is another matter, and still refused.
    with pytest.raises(Invalid, match="cannot be read"):
        okh.load(b"name: X\n\tversion: 1\n", "yaml")


def test_an_empty_manifest_says_so() -> None:
    with pytest.raises(Invalid, match="the manifest is empty"):
        okh.load(b"# title: [value]\n", "yaml")
    with pytest.raises(Invalid, match="a manifest must be a mapping"):
        okh.load(b"- title: X\n", "yaml")


def test_a_mass_table_may_come_as_a_list_of_one() -> None:
    # `[[part.mass]]` (TOML's array of tables) makes `mass` a list of one table.
    text = 'name = "Loom"\n[[part]]\nname = "Comb"\n[[part.mass]]\nvalue = 30\nunit = "g"\n'
    manifest = okh.parse(okh.load(text, "toml"))
    assert [(p.name, p.mass_kg) for p in manifest.parts] == [("Comb", 0.03)]
    assert manifest.mass_kg == 0.03
    two = text + '[[part.mass]]\nvalue = 31\nunit = "g"\n'
    with pytest.raises(Invalid, match=r"`part\[0\]\.mass` .* is not a mass"):
        okh.parse(okh.load(two, "toml"))
