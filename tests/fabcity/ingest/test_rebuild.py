"""Incremental processing gives exactly what a rebuild from the stored events gives.

Random events (site reports, machine jobs, energy counters that reset), in random order, with
duplicates, ingested in random batches; between batches, recomputes that claim some or all of
the work, rebuilds while rows are pending, designs registered: the flows and every
rollup equal those of `rebuild(from_events=True)`, to the last digit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import (
    CityFlowRollup,
    CityFlowRollupHour,
    CityFlowRollupMonth,
    Design,
    DirtyWindow,
    Event,
    Flow,
    FlowRollup,
    FlowRollupHour,
    FlowRollupMonth,
    PendingRollup,
    SiteActivity,
    SiteActivityDay,
    SiteActivityMonth,
)
from fabcity.ingest.rebuild import rebuild
from fabcity.ingest.service import ingest
from fabcity.registry import changes, designs, entries, okh
from fabcity.rollups import recompute
from schemas import api
from tests.support.city import CITY, OTHER_SITE, SITE
from tests.support.race import Beside

START = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)  # spans the spring daylight-saving change
MINUTES = 3 * 24 * 60

FLOWS = [
    ("consume", "filament", "g"),
    ("consume", "wood", "kg"),
    ("consume", "electricity", "Wh"),
    ("consume", "recycled_plastic", "kg"),
    ("produce", "part", "count"),
    ("produce", "furniture", "count"),
    ("discard", "plastic", "kg"),
    ("recover", "plastic", "kg"),
    ("modify", "furniture", "count"),
    ("use", "machine_hours", "min"),
    ("work", "work_hours", "h"),
]
RINGS = ["site", "city", "region", "beyond"]
DESIGNS = ["https://example.org/okh/a.yml", "https://x/b"]
FATES = ["reuse", "recycle", "compost", "energy", "incineration", "landfill"]


def when(minutes: int) -> str:
    return (START + timedelta(minutes=minutes)).isoformat()


@st.composite
def a_flow(draw: st.DrawFn) -> dict[str, Any]:
    action, resource, unit = draw(st.sampled_from(FLOWS))
    body: dict[str, Any] = {
        "action": action,
        "resource": resource,
        "unit": unit,
        "ring": draw(st.sampled_from(RINGS)),
        # Decimals of a few digits, as people type them.
        "quantity": draw(st.integers(0, 100_000)) / 1000,
    }
    if action == "discard":
        body["fate"] = draw(st.sampled_from(FATES))
    if action == "produce" and draw(st.booleans()):
        body["design"] = draw(st.sampled_from(DESIGNS))
    if action == "consume" and draw(st.booleans()):
        body["recycled"] = True
    return body


@st.composite
def an_event(draw: st.DrawFn, number: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["report", "device", "job", "meter", "meter"]))
    at = draw(st.integers(0, MINUTES))
    base = {"specversion": "1.0", "id": f"e{number}", "time": when(at)}
    if kind in ("report", "device"):
        source = f"/{CITY}/{draw(st.sampled_from([SITE, OTHER_SITE]))}"
        if kind == "device":
            source = f"/{CITY}/{SITE}/printer"
        flows = draw(st.lists(a_flow(), min_size=1, max_size=3))
        return {**base, "source": source, "type": "fabcity.flow", "data": flows}
    if kind == "job":
        length = draw(st.integers(1, 60 * 6))
        data: dict[str, Any] = {
            "status": draw(st.sampled_from(["completed", "failed", "cancelled"])),
            "started": when(at - length),
            "ended": when(at),
        }
        if draw(st.booleans()):
            data["mass_kg"] = draw(st.integers(1, 2000)) / 1000
        else:
            data["length_mm"] = draw(st.integers(100, 50_000))
        return {
            **base,
            "source": f"/{CITY}/{SITE}/printer",
            "type": "fabcity.machine.job",
            "data": data,
        }
    # A cumulative counter: it mostly grows, and sometimes it was reset.
    total = draw(st.integers(0, 5_000)) / 10
    return {
        **base,
        "source": f"/{CITY}/{OTHER_SITE}/meter",
        "type": "fabcity.meter.reading",
        "data": {"energy_kwh_total": total},
    }


# After a batch: nothing, a recompute claiming a few windows and marks (others stay pending),
# a recompute of everything, a rebuild of the rollups while marks are pending, or a design
# registered (its windows become dirty and are rebuilt, not added to).
STEPS = ["none", "some", "all", "rebuild", "design"]
History = tuple[list[list[dict[str, Any]]], list[tuple[str, int]]]


@st.composite
def histories(draw: st.DrawFn) -> History:
    count = draw(st.integers(1, 30))
    events = [draw(an_event(n)) for n in range(count)]
    repeats = draw(st.lists(st.sampled_from(events), max_size=10))
    arrivals = draw(st.permutations(events + repeats))
    batches: list[list[dict[str, Any]]] = []
    while arrivals:
        size = draw(st.integers(1, 8))
        batches.append(arrivals[:size])
        arrivals = arrivals[size:]
    steps = [(draw(st.sampled_from(STEPS)), draw(st.integers(1, 3))) for _ in batches]
    return batches, steps


def register_design(factory: sessionmaker[Session], n: int) -> None:
    manifest = okh.Manifest(
        standard="okh-v1",
        title=f"Design {n}",
        version=None,
        licence="CERN-OHL-S-2.0" if n % 2 else "proprietary",
        licences=["CERN-OHL-S-2.0"] if n % 2 else ["proprietary"],
        licensor=None,
        oshwa_uid=None,
        mass_kg=n / 10,
    )
    with transaction(factory) as s:
        designs.upsert(s, DESIGNS[n % len(DESIGNS)], manifest)


def register(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as s:
        city = entries.create_city(
            s, api.CityIn(slug=CITY, name="T", country="ES", timezone="Europe/Madrid")
        )
        lab = entries.create_site(s, city, api.SiteIn(slug=SITE, name="Lab"))
        hub = entries.create_site(s, city, api.SiteIn(slug=OTHER_SITE, name="Hub"))
        entries.create_device(s, lab, api.DeviceIn(slug="printer", name="P", kind="printer"))
        entries.create_device(s, hub, api.DeviceIn(slug="meter", name="M", kind="meter"))


def snapshot(factory: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, Any] = {
        "day": FlowRollup,
        "hour": FlowRollupHour,
        "month": FlowRollupMonth,
        "activity": SiteActivity,
        "activity_day": SiteActivityDay,
        "city_day": CityFlowRollup,
        "city_hour": CityFlowRollupHour,
        "city_month": CityFlowRollupMonth,
        "activity_month": SiteActivityMonth,
    }
    out: dict[str, list[tuple[Any, ...]]] = {}
    with transaction(factory) as s:
        for name, table in tables.items():
            columns = [c for c in table.__table__.columns]
            out[name] = sorted(tuple(r) for r in s.execute(select(*columns)))
        flow_columns = [c for c in Flow.__table__.columns if c.name != "id"]
        out["flows"] = sorted(tuple(map(str, r)) for r in s.execute(select(*flow_columns)))
    for level in ("hour", "day", "month"):
        # A city's cube is its site-level cube summed over sites and devices, however reached.
        assert out[f"city_{level}"] == summed_over_sites(tables[level], out[level]), level
    months: dict[tuple[Any, ...], int] = {}
    for city, day, site, events in out["activity_day"]:
        key = (city, day.replace(day=1), site)
        months[key] = months.get(key, 0) + events
    assert out["activity_month"] == sorted((*k, v) for k, v in months.items())
    return out


def summed_over_sites(table: Any, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows of a site-level flow cube, added up without `site_id` and `device_id`, as the
    city cube's rows (in its columns' order), sorted."""
    names = [c.name for c in table.__table__.columns]
    measures = ["amount", "design_mass", "design_mass_flows", "flows"]
    keys = [n for n in names if n not in ("site_id", "device_id", *measures)]
    sums: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        named = dict(zip(names, row, strict=True))
        total = sums.setdefault(tuple(named[k] for k in keys), [0, 0, 0, 0])
        for i, m in enumerate(measures):
            total[i] += named[m]
    city = {
        FlowRollup: CityFlowRollup, FlowRollupHour: CityFlowRollupHour,
        FlowRollupMonth: CityFlowRollupMonth,
    }[table]  # fmt: skip
    order = [c.name for c in city.__table__.columns]
    return sorted(
        tuple({**dict(zip(keys, k, strict=True)), **dict(zip(measures, v, strict=True))}[n]
              for n in order)
        for k, v in sums.items()
    )  # fmt: skip


def clear(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as s:
        for table in (
            Flow,
            FlowRollup,
            FlowRollupHour,
            FlowRollupMonth,
            CityFlowRollup,
            CityFlowRollupHour,
            CityFlowRollupMonth,
            SiteActivityMonth,
            SiteActivity,
            SiteActivityDay,
            DirtyWindow,
            PendingRollup,
            Event,
            Design,
        ):
            s.execute(delete(table))


def take_step(factory: sessionmaker[Session], step: str, n: int) -> None:
    """What happens between two batches: a worker's partial or full sweep, a rebuild, or a
    design registered."""
    if step in ("some", "all"):
        with transaction(factory) as s:
            recompute.recompute_dirty(s, n if step == "some" else 1000)
    elif step == "rebuild":
        rebuild(factory)
    elif step == "design":
        register_design(factory, n)


def settled(factory: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """The rollups once every dirty window is recomputed."""
    with transaction(factory) as s:
        recompute.recompute_dirty(s, 10_000)
    return snapshot(factory)


def check(factory: sessionmaker[Session], history: History) -> None:
    batches, steps = history
    clear(factory)
    for batch, (step, n) in zip(batches, steps, strict=True):
        with transaction(factory) as s:
            outcome = ingest(s, batch)
        assert not outcome.result.rejected, outcome.result.rejected
        take_step(factory, step, n)
    incremental = settled(factory)
    distinct = {e["id"] for b in batches for e in b}
    assert len(incremental["activity"]) > 0 or not distinct
    rebuild(factory, from_events=True)
    assert snapshot(factory) == incremental


@given(history=histories())
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_incremental_equals_rebuild(factory: sessionmaker[Session], history: History) -> None:
    with transaction(factory) as s:
        registered = entries.list_cities(s)
    if not registered:
        register(factory)
    check(factory, history)


def test_an_event_stored_while_flows_are_derived_again_is_counted_once(pg_url: str) -> None:
    """`rebuild --from-events` derives the flows of the stored events again while the labs go
    on posting. An event stored in the middle had its flows stored twice: once by ingest, and
    once by the rebuild, which read on past it. Its ingest now waits for the rebuild's end."""
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)

    def event(n: int) -> dict[str, Any]:
        return {"specversion": "1.0", "id": f"r{n}", "time": when(n),
                "source": f"/{CITY}/{SITE}", "type": "fabcity.flow",
                "data": [{"action": "consume", "resource": "wood", "unit": "kg",
                          "ring": "city", "quantity": 2}]}  # fmt: skip

    with transaction(factory) as s:
        assert ingest(s, [event(1), event(2)]).result.accepted == 2

    def store() -> None:
        with transaction(factory) as s:
            assert ingest(s, [event(3)]).result.accepted == 1

    arrived: list[Beside] = []

    def progress(stage: str, done: int, _total: int) -> None:
        if stage == "events" and done == 1:  # the first event derived again, the second not
            arrived.append(Beside(store))

    rebuild(factory, from_events=True, progress=progress, events_per_batch=1)
    (third,) = arrived
    third.finish()
    with transaction(factory) as s:
        # By hand: three events of 2 kg of wood each, 2,000,000 millionths of a kg.
        assert s.scalar(select(func.sum(Flow.amount))) == 6_000_000
        assert s.scalar(select(func.count()).select_from(Event)) == 3
    assert third.waited
    # And the rollups, once the third event's hour is recomputed, hold it once too.
    settled(factory)
    with transaction(factory) as s:
        assert s.scalar(select(func.sum(FlowRollup.amount))) == 6_000_000
    engine.dispose()


def test_a_rebuild_of_one_city_holds_its_ingest_and_no_other_citys(pg_url: str) -> None:
    """`rebuild --city testville --from-events` holds testville's batches, not another city's;
    a rebuild of every city (above) holds them all, by one lock."""
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)
    with transaction(factory) as s:
        other = entries.create_city(
            s, api.CityIn(slug="otherville", name="O", country="PT", timezone="Europe/Lisbon")
        )
        entries.create_site(s, other, api.SiteIn(slug="lab", name="Lab"))

    def event(source: str, n: int) -> dict[str, Any]:
        return {"specversion": "1.0", "id": f"o{n}", "time": when(n), "source": source,
                "type": "fabcity.flow",
                "data": [{"action": "consume", "resource": "wood", "unit": "kg",
                          "ring": "city", "quantity": 1}]}  # fmt: skip

    with transaction(factory) as s:
        assert ingest(s, [event(f"/{CITY}/{SITE}", 1), event(f"/{CITY}/{SITE}", 2)]).result
        city_id = entries.get_city(s, CITY).id

    def store(source: str, n: int) -> Callable[[], None]:
        def run() -> None:
            with transaction(factory) as s:
                assert ingest(s, [event(source, n)]).result.accepted == 1

        return run

    arrived: list[Beside] = []

    def progress(stage: str, done: int, _total: int) -> None:
        if stage == "events" and done == 1:
            arrived.append(Beside(store("/otherville/lab", 3), patience=15.0))
            arrived.append(Beside(store(f"/{CITY}/{SITE}", 4)))

    rebuild(factory, city_id, from_events=True, progress=progress, events_per_batch=1)
    elsewhere, here = arrived
    elsewhere.finish()
    here.finish()
    assert (elsewhere.waited, here.waited) == (False, True)
    with transaction(factory) as s:
        # By hand: four events of 1 kg, each counted once.
        assert s.scalar(select(func.sum(Flow.amount))) == 4_000_000
    engine.dispose()


def test_a_zone_change_waits_for_a_rebuild_of_every_city(pg_url: str) -> None:
    """A rebuild derives flows from the events it reads, in their hours; a zone change meanwhile
    would move the events under it and leave the new flows in the old hours."""
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)  # Europe/Madrid
    with transaction(factory) as s:
        wood = {"action": "consume", "resource": "wood", "unit": "kg", "ring": "city",
                "quantity": 1}  # fmt: skip
        events = [{"specversion": "1.0", "id": f"t{n}", "time": "2026-06-01T10:30:00Z",
                   "source": f"/{CITY}/{SITE}", "type": "fabcity.flow", "data": [wood]}
                  for n in (1, 2)]  # fmt: skip
        assert ingest(s, events).result.accepted == 2

    def move() -> None:
        with transaction(factory) as s:
            city = entries.get_city(s, CITY)
            changes.update_city(s, city, api.CityPatch(timezone="Asia/Tokyo"), "test")

    arrived: list[Beside] = []

    def progress(stage: str, done: int, _total: int) -> None:
        if stage == "events" and done == 1:
            arrived.append(Beside(move))

    rebuild(factory, from_events=True, progress=progress, events_per_batch=1)
    (moving,) = arrived
    moving.finish()
    assert moving.waited
    with transaction(factory) as s:
        # By hand: 10:30Z is 19:30 in Tokyo (UTC+9), events and flows alike.
        assert set(s.execute(select(Event.day, Event.hour)).tuples()) == {(date(2026, 6, 1), 19)}
        assert set(s.execute(select(Flow.day, Flow.hour)).tuples()) == {(date(2026, 6, 1), 19)}
    engine.dispose()
