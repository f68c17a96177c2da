"""Rollups kept up to date by concurrent workers on the real PostgreSQL.

Writers ingest (with redeliveries and meter readings out of order), two workers add and rebuild
in small claims, rebuilds of the rollups and design registrations run in between, all at once:
afterwards every rollup equals a rebuild from the stored events, and nothing failed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import Event, FlowRollup, PendingRollup
from fabcity.ingest.rebuild import rebuild
from fabcity.ingest.service import ingest
from fabcity.registry import designs, okh
from fabcity.rollups import recompute, windows
from tests.fabcity.ingest.test_rebuild import (
    DESIGNS,
    FLOWS,
    RINGS,
    register,
    register_design,
    snapshot,
)
from tests.support.city import CITY, OTHER_SITE, SITE
from tests.support.race import while_open

START = datetime(2026, 6, 1, tzinfo=UTC)


def events(rng: random.Random, count: int) -> list[dict[str, Any]]:
    out = []
    for n in range(count):
        at = (START + timedelta(minutes=rng.randrange(3 * 24 * 60))).isoformat()
        base: dict[str, Any] = {"specversion": "1.0", "id": f"e{n}", "time": at}
        if rng.random() < 0.15:
            out.append({**base, "source": f"/{CITY}/{OTHER_SITE}/meter",
                        "type": "fabcity.meter.reading",
                        "data": {"energy_kwh_total": rng.randrange(5000) / 10}})  # fmt: skip
            continue
        flows: list[dict[str, Any]] = []
        for _ in range(rng.randrange(1, 4)):
            action, resource, unit = rng.choice(FLOWS)
            quantity = rng.randrange(100_000) / 1000
            flow: dict[str, Any] = {"action": action, "resource": resource, "unit": unit,
                    "ring": rng.choice(RINGS), "quantity": quantity}  # fmt: skip
            if action == "discard":
                flow["fate"] = "recycle"
            if action == "produce":
                flow["design"] = rng.choice(["https://example.org/okh/a.yml", "https://x/b"])
            flows.append(flow)
        source = rng.choice([f"/{CITY}/{SITE}", f"/{CITY}/{SITE}/printer"])
        out.append({**base, "source": source, "type": "fabcity.flow", "data": flows})
    return out


def retried(action: Callable[[], object]) -> None:
    """As the bridge and the workers do: a transaction PostgreSQL broke off is run again."""
    for _ in range(20):
        try:
            action()
            return
        except OperationalError as exc:
            if not isinstance(exc.orig, psycopg.errors.DeadlockDetected):
                raise
    raise AssertionError("still deadlocked after 20 tries")


def test_concurrent_ingest_adds_and_rebuilds_agree_with_a_rebuild(pg_url: str) -> None:
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)
    rng = random.Random(7)
    history = events(rng, 1500)
    # Three writers; each sends its own share and a tenth of the others' again (redeliveries).
    shares = [history[i::3] + rng.sample(history, 150) for i in range(3)]
    writing = threading.Event()
    writing.set()
    failures: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported by the test, not lost in a thread
                failures.append(exc)

        return run

    def writer(share: list[dict[str, Any]], seed: int) -> Callable[[], None]:
        def work() -> None:
            local = random.Random(seed)
            local.shuffle(share)
            for start in range(0, len(share), 40):
                batch = share[start : start + 40]

                def store(batch: list[dict[str, Any]] = batch) -> None:
                    with transaction(factory) as s:
                        assert not ingest(s, batch).result.rejected

                retried(store)

        return work

    def adder(seed: int) -> Callable[[], None]:
        def work() -> None:
            local = random.Random(seed)
            while writing.is_set():

                def step() -> None:
                    with transaction(factory) as s:
                        recompute.recompute_dirty(s, local.randrange(1, 6))

                retried(step)

        return work

    def disturber() -> None:
        n = 0
        while writing.is_set():
            time.sleep(0.15)
            n += 1
            if n % 2:
                retried(lambda: rebuild(factory))
            else:
                retried(partial(register_design, factory, n))

    writers = [threading.Thread(target=guarded(writer(s, i))) for i, s in enumerate(shares)]
    others = [threading.Thread(target=guarded(adder(i))) for i in (1, 2)]
    others.append(threading.Thread(target=guarded(disturber)))
    for thread in writers + others:
        thread.start()
    for thread in writers:
        thread.join(300)
    writing.clear()
    for thread in others:
        thread.join(300)
    assert not failures, failures

    with transaction(factory) as s:
        while recompute.recompute_dirty(s, 1000).touched:
            pass
        assert s.scalar(select(func.count()).select_from(Event)) == len(history)
        assert s.scalar(select(func.count()).select_from(PendingRollup)) == 0
    incremental = snapshot(factory)
    assert incremental["hour"] and incremental["month"]
    rebuild(factory, from_events=True)
    rebuilt = snapshot(factory)
    for name in ["flows", *rebuilt]:
        assert rebuilt[name] == incremental[name], (
            name,
            sorted(set(rebuilt[name]) - set(incremental[name]))[:5],
            sorted(set(incremental[name]) - set(rebuilt[name]))[:5],
        )
    engine.dispose()


def test_a_recompute_waits_for_a_design_being_registered(pg_url: str) -> None:
    """A design's mass changes in a transaction that has not committed yet. Meanwhile a flow of
    that design is stored in an hour that held none, and a worker adds it. The registration
    cannot mark that hour (it cannot see the flow), so the worker must not add the flow with
    the mass about to be replaced: it waits for the registration, then reads the new mass."""
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)
    register_design(factory, 2)  # DESIGNS[0], 0.2 kg

    def made(number: int, minutes: int) -> dict[str, Any]:
        at = (START + timedelta(minutes=minutes)).isoformat()
        flow = {"action": "produce", "resource": "furniture", "unit": "count", "ring": "city",
                "quantity": 3, "design": DESIGNS[0]}  # fmt: skip
        return {"specversion": "1.0", "id": f"m{number}", "time": at,
                "source": f"/{CITY}/{SITE}", "type": "fabcity.flow", "data": [flow]}  # fmt: skip

    def drain() -> None:
        with transaction(factory) as s:
            while recompute.recompute_dirty(s, 1000).touched:
                pass

    with transaction(factory) as s:
        ingest(s, [made(1, 0)])
    drain()

    registering = factory()
    manifest = okh.Manifest(standard="okh-v1", title="Heavier", version=None, licence=None,
                            licences=[], licensor=None, oshwa_uid=None, mass_kg=1.5)  # fmt: skip
    designs.upsert(registering, DESIGNS[0], manifest)  # not committed yet
    with transaction(factory) as s:  # two days later: an hour without flows of the design
        ingest(s, [made(2, 2 * 24 * 60)])
    assert while_open(registering, drain)
    drain()
    # By hand: 3 pieces × 1.5 kg = 4.5 kg = 4,500,000 millionths in each of the two days.
    days = days_agreeing_with_a_rebuild(factory)
    assert [d["design_mass"] for d in days if d["design_mass_flows"]] == [4_500_000, 4_500_000]
    engine.dispose()


def days_agreeing_with_a_rebuild(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    """The day rollups as kept, once checked (with the hours) against a rebuild of them."""
    incremental = snapshot(factory)
    rebuild(factory)
    rebuilt = snapshot(factory)
    assert incremental["hour"] == rebuilt["hour"]
    assert incremental["day"] == rebuilt["day"]
    names = [c.name for c in FlowRollup.__table__.columns]
    return [dict(zip(names, row, strict=True)) for row in incremental["day"]]


def test_an_hour_marked_dirty_again_waits_for_the_change_that_marked_it(pg_url: str) -> None:
    """An hour is already marked dirty (committed: a meter reading marks its hour). A
    retraction takes an event's flows out of that hour and marks it again, and has not
    committed yet when a worker claims the hour. The worker must not rebuild the hour from
    what it sees then (the flows still there) and take the mark with it: the mark waits for
    the retraction, and the hour is rebuilt after."""
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)
    source = f"/{CITY}/{SITE}"
    typo = {"specversion": "1.0", "id": "typo", "time": START.isoformat(), "source": source,
            "type": "fabcity.flow", "data": [{"action": "consume", "resource": "wood",
            "unit": "kg", "ring": "city", "quantity": 240}]}  # fmt: skip
    retraction = {"specversion": "1.0", "id": "typo-retracted", "source": source,
                  "type": "fabcity.event.retracted", "data": {"id": "typo"}}  # fmt: skip

    def drain() -> None:
        with transaction(factory) as s:
            while recompute.recompute_dirty(s, 1000).touched:
                pass

    with transaction(factory) as s:
        ingest(s, [typo])
    drain()
    with transaction(factory) as s:
        (hour,) = s.execute(select(Event.city_id, Event.day, Event.hour)).all()
        windows.mark_dirty(s, [(hour[0], hour[1], hour[2])])

    retracting = factory()
    assert not ingest(retracting, [retraction]).result.rejected  # not committed yet
    while_open(retracting, drain)  # the claim passes the locked mark by: nothing to wait for
    drain()
    # By hand: the only flow, 240 kg of wood, is retracted: nothing is consumed that day.
    days = days_agreeing_with_a_rebuild(factory)
    assert [d for d in days if d["action"] == "consume"] == []
    engine.dispose()
