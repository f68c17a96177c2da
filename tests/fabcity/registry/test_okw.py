"""Sites from Open Know-Where records: each bad record refused with why, re-imports update."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.errors import Invalid
from fabcity.core.models import City, Facility, Site
from fabcity.registry import okw
from schemas import standards
from schemas.standards import ImportResult
from tests.fixtures import OKW
from tests.support.city import CITY, SITE, register


def _import(factory: sessionmaker[Session], name: str) -> ImportResult:
    path = OKW / name
    media = "application/json" if path.suffix == ".json" else "application/yaml"
    records = okw.load_records(path.read_bytes(), media)
    with transaction(factory) as s:
        city = s.scalars(select(City).where(City.slug == CITY)).one()
        return okw.import_records(s, city, records)


def _facilities(factory: sessionmaker[Session]) -> dict[str, tuple[Site, Facility]]:
    with transaction(factory) as s:
        rows = s.execute(select(Site, Facility).join(Facility)).tuples().all()
        return {site.slug: (site, facility) for site, facility in rows}


def test_good_records_imported_bad_ones_refused_with_why(factory: sessionmaker[Session]) -> None:
    register(factory)
    result = _import(factory, "labs.yml")

    assert [(r.index, r.id, r.created) for r in result.imported] == [
        (0, "fab-lab-centre", True),
        (1, "makers-garage", True),
    ]
    errors = {r.index: r.error for r in result.rejected}
    assert sorted(errors) == [2, 3, 4]
    assert errors[2].startswith("Lost Lab: `location.gps_coordinates`")
    assert "north of the river" in errors[2]
    assert "`name` is missing" in errors[3]
    assert (
        errors[4]
        == "Half Lab: `equipment[0].equipment_type` is missing (e.g. '3D printer', 'laser cutter')"
    )

    found = _facilities(factory)
    site, facility = found["fab-lab-centre"]
    assert (site.name, site.latitude, site.longitude) == ("Fab Lab Centre", 41.3968, 2.1943)
    assert facility.okw_id == "https://okw.example.org/facilities/fablab-centre"
    assert (facility.status, facility.access_type) == ("active", "restricted_with_public_hours")
    assert facility.equipment == [
        {
            "equipment_type": "3D printer",
            "manufacturer": "Prusa Research",
            "model": "Original Prusa i3 MK3S+",
            "manufacturing_process": ["https://en.wikipedia.org/wiki/Fused_filament_fabrication"],
            "materials_worked": [],
        },
        {
            "equipment_type": "Laser cutter",
            "manufacturer": "Trotec",
            "model": "Speedy 400",
            "manufacturing_process": ["laser cutting", "laser engraving"],
            "materials_worked": [],
        },
    ]
    assert [m["supplier_location"] for m in facility.materials] == ["Testville, ES", "Valencia, ES"]
    # Provenance: who verified the record and when, and the record's own history as given.
    assert facility.verified_by == "Ada Verifier"
    assert facility.verified_at is not None
    assert facility.verified_at.replace(tzinfo=UTC) == datetime(2026, 5, 1, tzinfo=UTC)
    assert facility.record_data is not None
    assert facility.record_data["created_by"] == {"name": "Lab Manager"}
    assert facility.record_data["date_created"] == "2025-11-02"
    garage = found["makers-garage"][1]
    assert garage.okw_id == "name:makers-garage"
    assert (garage.status, garage.access_type) == ("planned", "membership")


def test_reimport_updates_the_site_instead_of_adding_one(factory: sessionmaker[Session]) -> None:
    register(factory)
    _import(factory, "labs.yml")
    with transaction(factory) as s:
        sites_before = s.scalar(select(func.count()).select_from(Site))

    again = _import(factory, "labs.yml")
    assert [r.created for r in again.imported] == [False, False]
    result = _import(factory, "labs-reverified.yml")
    assert [(r.id, r.created) for r in result.imported] == [("fab-lab-centre", False)]

    with transaction(factory) as s:
        assert s.scalar(select(func.count()).select_from(Site)) == sites_before
    site, facility = _facilities(factory)["fab-lab-centre"]
    assert (site.latitude, site.longitude) == (41.3970, 2.1950)
    assert (facility.status, facility.access_type) == ("temporary_closure", "public")
    assert [e["equipment_type"] for e in facility.equipment] == ["CNC mill"]
    assert facility.materials == []
    assert facility.verified_by == "Grace Checker"
    assert facility.verified_at is not None
    assert facility.verified_at.replace(tzinfo=UTC) == datetime(2027, 5, 3, 7, 30, tzinfo=UTC)


def test_json_records_and_sites_registered_by_hand(factory: sessionmaker[Session]) -> None:
    register(factory)
    # A record named like a site registered by hand is that site: it is adopted, not doubled.
    with transaction(factory) as s:
        city = s.scalars(select(City).where(City.slug == CITY)).one()
        first = okw.import_records(s, city, [{"name": "Lab", "facility_status": "Closed"}])
        # The same name in other case and punctuation, now with an id: still that site, which
        # the id names from now on.
        second = okw.import_records(s, city, [{"id": "other", "name": "LAB!"}])
        third = okw.import_records(s, city, [{"id": "other", "name": "Lab"}])
    assert [(r.id, r.created, r.matched) for r in first.imported] == [(SITE, False, "name")]
    assert [(r.id, r.created, r.matched) for r in second.imported] == [(SITE, False, "name")]
    assert [(r.id, r.matched) for r in third.imported] == [(SITE, "id")]
    assert _facilities(factory)[SITE][1].okw_id == "other"
    result = _import(factory, "recycling-hub.json")
    assert result.rejected == []
    hub = _facilities(factory)["precious-plastic-hub"]
    assert (hub[0].latitude, hub[0].longitude) == (41.38, 2.18)
    assert hub[1].verified_by == "Hub Collective"
    assert hub[1].materials == [
        {
            "material_type": "HDPE",
            "resource": "plastic",
            "manufacturer": None,
            "supplier_location": "Testville",
            "supplier_latitude": None,
            "supplier_longitude": None,
        }
    ]


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ("just a string", "must be a mapping"),
        ({"name": "X", "location": {"gps_coordinates": "95, 10"}}, "off the globe"),
        ({"name": "X", "equipment": "a laser"}, "`equipment` must be a list"),
        ({"name": "X", "typical_materials": [{}]}, "`typical_materials[0].material_type`"),
        ({"name": "X", "record_data": {"date_verified": "last spring"}}, "is not a date"),
        ({"name": "X", "record_data": {"verified_by": 7}}, "`record_data.verified_by` must be"),
        ({"name": "!!!"}, "no letters or digits"),
        ({"name": "X", "equipment": [7]}, "`equipment[0]` must be a mapping, or the equipment"),
        (
            {"name": "X", "typical_materials": [{"material_type": "PLA", "supplier_location": 3}]},
            "`typical_materials[0].supplier_location` must be a location",
        ),
        (
            {"name": "X", "equipment": [{"equipment_type": "CNC", "materials_worked": [{}]}]},
            "`equipment[0].materials_worked[0].material_type` is missing",
        ),
    ],
)
def test_malformed_fields_say_what_to_fix(record: object, error: str) -> None:
    with pytest.raises(Invalid) as caught:
        okw.parse_record(record)
    assert error in caught.value.detail


def test_unreadable_document_is_one_clear_error() -> None:
    with pytest.raises(Invalid, match="cannot be read as YAML"):
        okw.load_records(b"name: [unclosed", "application/yaml")
    with pytest.raises(Invalid, match="cannot be read as JSON"):
        okw.load_records(b"{", "application/json")


# The forms records come in ------------------------------------------------------------------


def test_the_alliances_2024_records_are_read(factory: sessionmaker[Session]) -> None:
    """The Internet of Production Alliance publishes its map in its 2024 data schema, the
    name under `facility.name`: 19 of its records, each imported; the three it lists twice
    (same name, a few metres apart) are one site each."""
    register(factory)
    result = _import(factory, "iopa-2024-sample.json")

    assert result.rejected == []
    assert len(result.imported) == 19
    assert [r.index for r in result.imported if r.created] == [*range(16)]
    assert [(r.index, r.id, r.matched) for r in result.imported if not r.created] == [
        (16, "iroko-fablab", "name and location"),
        (17, "fablab-guldborgsund", "name and location"),
        (18, "atallier-fablab-moulins", "name and location"),
    ]
    slugs = {r.index: r.id for r in result.imported}
    # One name, 25 km apart: two places. One name, no coordinates, and each record has its
    # own id: nothing says they are one place. Names without Latin letters keep theirs.
    assert (slugs[9], slugs[12]) == ("fab-lab-upeu", "fab-lab-upeu-2")
    assert (slugs[10], slugs[11]) == ("fablab-uir", "fablab-uir-2")
    assert (slugs[13], slugs[14]) == ("fablab", "fablab-2")

    found = _facilities(factory)
    songpa, songpa_record = found["fablab-songpa"]
    assert (songpa.name, songpa.latitude) == ("Fablab Songpa", None)
    assert songpa_record.okw_id == "c94d1c69-8036-4f9d-bb15-a8a37de7af63"
    assert songpa_record.address == {
        "text": "40, Dongnam-ro 28-gil",
        "postcode": "05738",
        "city": "Seoul",
        "region": "Songpa",
        "country": "KR",
    }
    ping = found["ping"][0]
    assert (ping.latitude, ping.longitude) == (47.218371, -1.55362100000002)
    assert found["fab-lab-upeu"][0].name == "Fab Lab UPeU"  # spaces around a name dropped

    again = _import(factory, "iopa-2024-sample.json")
    assert [r.created for r in again.imported] == [False] * 19
    assert [r.matched for r in again.imported] == ["id"] * 16 + ["name and location"] * 3
    with transaction(factory) as s:
        # The two registered by hand, and 16 from the Alliance's records.
        assert s.scalar(select(func.count()).select_from(Site)) == 2 + 16


def test_equipment_materials_and_supplier_locations_are_kept() -> None:
    [raw] = okw.load_records((OKW / "ateneu-v1.yml").read_bytes())
    record = okw.parse_record(raw)

    assert (record.access_type, record.status, record.notes) == ("shared_space", "active", [])
    printer, laser = record.equipment
    assert [(m["material_type"].rsplit("/", 1)[-1], m["resource"]) for m in printer[
        "materials_worked"
    ]] == [("Polylactic_acid", "filament"), ("Polyethylene_terephthalate", "plastic")]  # fmt: skip
    pet = printer["materials_worked"][1]
    assert (pet["manufacturer"], pet["supplier_location"]) == (
        "Filamentos Locales",
        "3, Carrer del Plàstic, Testville, ES",
    )
    assert (pet["supplier_latitude"], pet["supplier_longitude"]) == (41.40, 2.20)
    assert [m["resource"] for m in laser["materials_worked"]] == ["wood", "plastic"]
    aluminium, hdpe, wax = record.materials
    assert aluminium["supplier_location"] == "7, Avinguda del Metall, Badalona, Catalonia, ES"
    assert (aluminium["supplier_latitude"], aluminium["supplier_longitude"]) == (41.45, 2.25)
    assert aluminium["manufacturer"] == "Alu Sur"
    assert (hdpe["resource"], wax["resource"]) == ("recycled_plastic", None)
    # What a site works is what it knows: the resources of its materials and its equipment's.
    facility = standards.Facility.model_validate(
        {
            "slug": "ateneu", "name": record.name, "city": CITY, "okw_id": record.key,
            "status": record.status, "access_type": record.access_type, "address": None,
            "equipment": record.equipment, "materials": record.materials,
            "verified_by": None, "verified_at": None, "imported_at": datetime.now(UTC),
        }
    )  # fmt: skip
    assert facility.resources == ["filament", "metal", "plastic", "recycled_plastic", "wood"]
    assert okw.known_resources(record.equipment, record.materials) == facility.resources


@pytest.mark.parametrize(
    ("given", "access_type"),
    [
        ("Shared space", "shared_space"),
        ("shared-space", "shared_space"),
        ("Coworking", "shared_space"),
        ("Members only", "membership"),
        ("Membership", "membership"),
        ("Open to the public", "public"),
        ("Public", "public"),
        ("Restricted with public hours", "restricted_with_public_hours"),
        ("Private", "restricted"),
    ],
)
def test_access_types_are_read_generously(given: str, access_type: str) -> None:
    record = okw.parse_record({"name": "X", "access_type": given})
    assert (record.access_type, record.notes) == (access_type, [])


def test_a_value_that_maps_to_nothing_is_dropped_with_a_note_not_the_record() -> None:
    record = okw.parse_record(
        {"name": "X", "access_type": "VIP", "facility_status": "Open-ish", "equipment": ["CNC"]}
    )
    assert (record.access_type, record.status) == (None, None)
    assert record.notes == [
        "`facility_status` 'Open-ish' is not one of: active, planned, temporary_closure, "
        "closed; left unset",
        "`access_type` 'VIP' is not one of: public, restricted, restricted_with_public_hours, "
        "shared_space, membership; left unset",
    ]
    assert [e["equipment_type"] for e in record.equipment] == ["CNC"]


@pytest.mark.parametrize(
    ("material", "resource"),
    [
        ("PLA", "filament"),
        ("https://en.wikipedia.org/wiki/Acrylonitrile_butadiene_styrene", "filament"),
        ("https://en.wikipedia.org/wiki/Medium-density_fibreboard", "wood"),
        ("Stainless Steel", "metal"),
        ("recycled aluminium", "scrap_metal"),
        ("rPET flakes", None),
        ("PCBs", "electronics"),
        ("Cardboard", "paper"),
        ("Clay", "stone"),
        ("Unobtainium", None),
    ],
)
def test_materials_map_to_resources(material: str, resource: str | None) -> None:
    assert okw.resource_of(material) == resource


def test_a_name_without_latin_letters_takes_its_slug_from_the_id() -> None:
    record = okw.parse_record({"id": "https://okw.example.org/facilities/42", "name": "法贝实验室"})
    assert (record.name, record.slug) == ("法贝实验室", "site-42")
    with pytest.raises(Invalid, match="no letters or digits"):
        okw.parse_record({"name": "法贝实验室"})
