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
        },
        {
            "equipment_type": "Laser cutter",
            "manufacturer": "Trotec",
            "model": "Speedy 400",
            "manufacturing_process": ["laser cutting", "laser engraving"],
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
        # Another record whose name makes the same slug gets a numbered site of its own.
        second = okw.import_records(s, city, [{"id": "other", "name": "LAB!"}])
    assert [(r.id, r.created) for r in first.imported] == [(SITE, True)]
    assert [r.id for r in second.imported] == [f"{SITE}-2"]
    result = _import(factory, "recycling-hub.json")
    assert result.rejected == []
    hub = _facilities(factory)["precious-plastic-hub"]
    assert (hub[0].latitude, hub[0].longitude) == (41.38, 2.18)
    assert hub[1].verified_by == "Hub Collective"
    assert hub[1].materials == [
        {"material_type": "HDPE", "manufacturer": None, "supplier_location": "Testville"}
    ]


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ("just a string", "must be a mapping"),
        ({"name": "X", "facility_status": "Open-ish"}, "`facility_status` 'Open-ish' is not one"),
        ({"name": "X", "access_type": "VIP"}, "`access_type` 'VIP' is not one"),
        ({"name": "X", "location": {"gps_coordinates": "95, 10"}}, "off the globe"),
        ({"name": "X", "equipment": "a laser"}, "`equipment` must be a list"),
        ({"name": "X", "typical_materials": [{}]}, "`typical_materials[0].material_type`"),
        ({"name": "X", "record_data": {"date_verified": "last spring"}}, "is not a date"),
        ({"name": "X", "record_data": {"verified_by": 7}}, "`record_data.verified_by` must be"),
        ({"name": "!!!"}, "no letters or digits"),
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
