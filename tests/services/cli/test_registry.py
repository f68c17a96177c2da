"""`fabcity cities|sites|devices update|retire`, `fabcity cities changes` and `fabcity
resources add|list` as an operator runs them."""

from __future__ import annotations

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import City, Device, Resource, Site
from fabcity.ingest.service import ingest
from tests.services.cli.runner import assert_refused, fabcity
from tests.support.city import CITY, DEVICE, SITE, event, flow, register


def test_an_operator_corrects_retires_and_extends_the_registry(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    source = f"/{CITY}/{SITE}/{DEVICE}"
    with transaction(factory) as s:
        assert ingest(s, [event(flow(), source=source)]).result.accepted == 1

    done = fabcity(sqlite_url, "sites", "update", CITY, SITE, "--latitude", "53.55")
    assert done.returncode == 0, done.stderr
    done = fabcity(sqlite_url, "cities", "update", CITY, "--population", "1800000")
    assert done.returncode == 0, done.stderr
    done = fabcity(sqlite_url, "devices", "update", CITY, SITE, DEVICE, "--set", "input_ring=city")
    assert done.returncode == 0, done.stderr
    assert_refused(
        fabcity(sqlite_url, "cities", "update", CITY, "--timezone", "Nowhere/Else"),
        1,
        "unknown time zone",
    )
    assert_refused(fabcity(sqlite_url, "sites", "update", CITY, SITE), 2, "nothing to change")

    retired = fabcity(sqlite_url, "devices", "retire", CITY, SITE, DEVICE)
    assert retired.returncode == 0, retired.stderr
    assert f"retired {source}" in retired.stdout
    assert "retired 20" in fabcity(sqlite_url, "devices", "list", CITY).stdout
    with transaction(factory) as s:
        refused = ingest(s, [event(flow(), source=source)]).result
        assert refused.accepted == 0 and "retired" in refused.rejected[0].error

    assert_refused(
        fabcity(
            sqlite_url,
            "resources",
            "add",
            "plywood",
            "--dimension",
            "mass",
            "--mfa-category",
            "MF9",
        ),
        1,
        "mfa_category",
    )
    added = fabcity(
        sqlite_url, "resources", "add", "plywood", "--dimension", "mass", "--mfa-category", "MF1"
    )
    assert added.returncode == 0, added.stderr
    assert "plywood" in fabcity(sqlite_url, "resources", "list").stdout

    changes = fabcity(sqlite_url, "cities", "changes", CITY)
    assert changes.returncode == 0, changes.stderr
    for line in ("latitude", "population", "input_ring", "retire"):
        assert line in changes.stdout, changes.stdout
    with transaction(factory) as s:
        site = s.query(Site).filter_by(slug=SITE).one()
        assert site.latitude == 53.55
        assert s.query(City).filter_by(slug=CITY).one().population == 1_800_000
        device = s.query(Device).filter_by(slug=DEVICE).one()
        assert device.settings == {"input_ring": "city"}
        assert device.retired_at is not None
        plywood = s.get(Resource, "plywood")
        assert plywood is not None and (plywood.unit, plywood.mfa_category) == ("kg", "MF1")
    engine.dispose()
