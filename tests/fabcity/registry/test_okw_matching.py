"""Re-importing an OKW record finds the site it is about: by the record's id, then by its
name and location. A site doubled by an import counts as a site that does not report, and
lowers the city's coverage and its Fab City Index."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import City, Facility, Site
from fabcity.registry import entries, okw
from schemas import api
from schemas.standards import ImportResult
from tests.support.city import CITY, register

ATENEU = "Ateneu de Fabricació"
AT_ATENEU = {"gps_coordinates": "41.3969, 2.1945"}  # 20 m from the registered site


def _register_ateneu(factory: sessionmaker[Session]) -> None:
    register(factory)
    with transaction(factory) as s:
        city = entries.get_city(s, CITY)
        entries.create_site(
            s, city, api.SiteIn(slug="ateneu", name=ATENEU, latitude=41.3968, longitude=2.1943)
        )


def _import(factory: sessionmaker[Session], *records: dict[str, Any]) -> ImportResult:
    with transaction(factory) as s:
        city = s.scalars(select(City).where(City.slug == CITY)).one()
        return okw.import_records(s, city, list(records))


def _sites(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as s:
        return s.scalar(select(func.count()).select_from(Site)) or 0


def test_a_record_with_an_id_finds_the_site_of_its_name_and_place(
    factory: sessionmaker[Session],
) -> None:
    _register_ateneu(factory)
    before = _sites(factory)
    record = {"id": "okw:ateneu", "name": ATENEU, "location": AT_ATENEU}

    first = _import(factory, record)
    assert [(r.id, r.created, r.matched) for r in first.imported] == [
        ("ateneu", False, "name and location")
    ]
    assert _sites(factory) == before
    again = _import(factory, {**record, "name": "Ateneu de Fabricació (Poblenou)"})
    assert [(r.id, r.matched) for r in again.imported] == [("ateneu", "id")]
    with transaction(factory) as s:
        site = s.scalars(select(Site).where(Site.slug == "ateneu")).one()
        assert site.name == "Ateneu de Fabricació (Poblenou)"
        facility = s.get_one(Facility, site.id)
        assert facility.okw_id == "okw:ateneu"
    assert _sites(factory) == before


def test_a_record_first_imported_without_an_id_takes_its_id_later(
    factory: sessionmaker[Session],
) -> None:
    register(factory)
    first = _import(factory, {"name": ATENEU, "location": AT_ATENEU})
    assert [(r.id, r.created, r.key) for r in first.imported] == [
        ("ateneu-de-fabricacio", True, "name:ateneu-de-fabricacio")
    ]
    with_id = _import(factory, {"id": "okw:ateneu", "name": "ATENEU DE FABRICACIO"})
    # No coordinates to compare: the name alone, which no record with an id had claimed.
    assert [(r.id, r.created, r.matched) for r in with_id.imported] == [
        ("ateneu-de-fabricacio", False, "name")
    ]
    by_id = _import(factory, {"id": "okw:ateneu", "name": ATENEU})
    assert [(r.id, r.matched) for r in by_id.imported] == [("ateneu-de-fabricacio", "id")]
    assert _sites(factory) == 3


def test_one_name_in_two_places_is_two_sites(factory: sessionmaker[Session]) -> None:
    _register_ateneu(factory)
    # 5 km away: another place of the same name.
    far = {"id": "okw:ateneu-nord", "name": ATENEU, "location": {"gps_coordinates": [41.44, 2.19]}}
    result = _import(factory, far)
    assert [(r.id, r.created, r.matched) for r in result.imported] == [
        ("ateneu-de-fabricacio", True, None)
    ]
    # Two records with ids and no coordinates: one name is not enough to make them one.
    named = _import(
        factory,
        {"id": "okw:a", "name": "Fab Lab Libya"},
        {"id": "okw:b", "name": "Fab Lab Libya "},
    )
    assert [(r.id, r.created) for r in named.imported] == [
        ("fab-lab-libya", True),
        ("fab-lab-libya-2", True),
    ]


def test_distance_is_great_circle_metres() -> None:
    # One degree of latitude is 111.2 km on the mean sphere; Barcelona to Paris is 831 km.
    assert round(okw.distance_m((0.0, 0.0), (1.0, 0.0))) == 111_195
    assert round(okw.distance_m((41.3874, 2.1686), (48.8566, 2.3522)) / 1000) == 831
    assert okw.same_name("Ateneu de Fabricació", "ateneu  de FABRICACIO!")
    assert not okw.same_name("Fab Lab UPeU", "Fab Lab UPeU Lima")
