"""The simulated city behaves like a city: a real day's pace and spread, parts of known mass
from registered designs, some exports, and a history that is the same whichever day it starts."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.registry import okh
from services.cli import simulate
from services.cli.simulate import DESIGNS, Simulator
from services.http.app import create_app
from tests.conftest import settings_for
from workers import jobs
from workers.dispatch import NoDispatch


def simulator(seed: int = 1) -> Simulator:
    # Never connected: these tests watch what it would send.
    return Simulator("http://127.0.0.1:9", "127.0.0.1", 9, seed=seed)


def parts(events: list[dict[str, Any]]) -> float:
    return sum(
        float(f["quantity"])
        for e in events
        if e["type"] == "fabcity.flow"
        for f in e["data"]
        if f["action"] == "produce"
    )


def test_a_live_day_has_the_pace_and_spread_of_a_real_one() -> None:
    """A day of 2 s ticks made thousands of parts, all stamped "now"; a real day's machines
    finish about 17 jobs, in opening hours only."""
    sim = simulator()
    sent: list[tuple[datetime, dict[str, Any]]] = []
    sim._publish = lambda device, event: sent.append((now, event))  # type: ignore[method-assign]
    sim._post = lambda batch: sent.extend((now, e) for e in batch)  # type: ignore[method-assign]
    start = datetime(2026, 6, 10, tzinfo=sim.tz).astimezone(UTC)
    for tick in range(24 * 1800):
        now = start + timedelta(seconds=2 * tick)
        sim.tick(2.0, now)
    flows = [
        (t, e) for t, e in sent if e["type"] == "fabcity.flow" and "/meter-1" not in e["source"]
    ]
    machine_jobs = [(t, e) for t, e in flows if e["source"].count("/") == 3]
    # 17 expected, Poisson-like spread: well inside 8..30 for any seed.
    assert 8 <= len(machine_jobs) <= 30, len(machine_jobs)
    made = parts([e for _, e in flows])
    assert 30 <= made <= 200, made  # about 100 things on a normal day
    hours = Counter(t.astimezone(sim.tz).hour for t, _ in flows)
    assert set(hours) <= set(range(8, 21)), hours  # nothing at night
    # The meter reports every tick, and never backwards.
    totals = [
        e["data"]["energy_kwh_total"] for _, e in sent if e["type"] == "fabcity.meter.reading"
    ]
    assert len(totals) == 24 * 1800
    assert totals == sorted(totals)
    # A day of a workshop: 0.4 kW all day, up to 6.4 kW while open: between 10 and 100 kWh.
    assert 10 < totals[-1] - totals[0] < 100


def test_seven_minutes_of_watching_add_minutes_not_days() -> None:
    """The reported case: seven minutes of live ticks showed 2,649 parts."""
    sim = simulator(seed=3)
    sent: list[dict[str, Any]] = []
    sim._publish = lambda device, event: sent.append(event)  # type: ignore[method-assign]
    sim._post = lambda batch: sent.extend(batch)  # type: ignore[method-assign]
    busiest = datetime(2026, 6, 10, 11, tzinfo=sim.tz).astimezone(UTC)
    for tick in range(210):
        sim.tick(2.0, busiest + timedelta(seconds=2 * tick))
    assert parts(sent) < 40


def test_history_days_are_normal_days_the_same_from_any_start() -> None:
    sim = simulator()
    first = date(2026, 3, 1)
    days = [sim._day(first + timedelta(days=n)) for n in range(60)]
    assert sim._day(first) == simulator(seed=99)._day(first)
    ids = [e["id"] for day in days for e in day]
    assert len(ids) == len(set(ids))
    mean = sum(parts(day) for day in days) / len(days)
    assert 60 <= mean <= 150, mean
    # Every part (and every repair) names a design the simulator registers, so its mass is
    # known; some leave the city.
    urls = {simulate.design_url(d) for d in DESIGNS}
    made = [
        f
        for day in days
        for e in day
        if e["type"] == "fabcity.flow"
        for f in e["data"]
        if f["action"] in ("produce", "modify")
    ]
    assert made and all(f.get("design") in urls for f in made)
    assert {f["ring"] for f in made if f["action"] == "produce"} >= {"city", "region", "beyond"}
    # The meter's readings run forward across days, the spring and autumn clock changes too.
    readings = sorted(
        (e["time"], e["data"]["energy_kwh_total"])
        for day in days + [sim._day(date(2026, 10, 24) + timedelta(days=n)) for n in range(3)]
        for e in day
        if e["type"] == "fabcity.meter.reading"
    )
    totals = [total for _, total in sorted((datetime.fromisoformat(t), v) for t, v in readings)]
    assert totals == sorted(totals)


def test_the_designs_are_manifests_with_a_mass_and_a_licence() -> None:
    for design in DESIGNS:
        manifest = okh.parse(okh.load(simulate.design_manifest(design), "toml"))
        assert manifest.title == design.name
        assert manifest.mass_kg == pytest.approx(design.mass_g / 1000)
        assert manifest.licence == design.licence


def test_the_simulated_history_has_things_of_known_mass(sqlite_url: str) -> None:
    """ "1,699 things made or repaired have no known mass": now none, and exports exist."""
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    app = create_app(settings_for(sqlite_url), factory=factory, dispatcher=NoDispatch())
    sim = simulator()
    try:
        with TestClient(app) as client:
            sim.http = client
            sim.register()
            sim.register()  # again, as a restart does: nothing breaks, nothing doubles
            sim.backfill(7)
            jobs.recompute_dirty_windows(factory, 1000)
            today = datetime.now(sim.tz).date()
            span = {"from": str(today - timedelta(days=7)), "to": str(today)}
            flows = client.get("/v1/cities/demo-city/flows", params=span).json()
            assert flows["unweighed_count"] == 0
            response = client.get(
                "/v1/cities/demo-city/metrics",
                params={
                    **span,
                    "interval": "year",
                    "names": "produced_count,produced_kg,exp,open_design_share",
                },
            )
            assert response.status_code == 200, response.text
            value = {s["name"]: s["points"][0] for s in response.json()["series"]}
            # About 100 things a day, each of a design's mass (so modelled), some sold outside
            # the city, and a share from the one non-commercial design (not open).
            assert 7 * 50 <= value["produced_count"]["value"] <= 8 * 200
            assert value["produced_kg"]["value"] > 0
            assert value["produced_kg"]["state"] == "modelled"
            assert value["exp"]["value"] > 0
            assert 0.5 < value["open_design_share"]["value"] < 1
    finally:
        engine.dispose()
