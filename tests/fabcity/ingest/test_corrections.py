"""Corrections through the one ingest path, on both databases: a retraction takes an event's
flows out of the rollups, a replacement's flows count instead, the newest correction counts,
and what cannot be corrected is refused by index with the reason."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import Correction, DirtyWindow, Event, Flow, FlowRollup
from fabcity.ingest.rebuild import rebuild
from fabcity.ingest.service import IngestOutcome, ingest
from fabcity.rollups import recompute
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow, register

LAB = f"/{CITY}/{SITE}"


def retract(target: str, id: str, source: str = LAB, **data: Any) -> dict[str, Any]:
    return event({"id": target, **data}, id=id, source=source, type="fabcity.event.retracted")


def supersede(target: str, id: str, kg: float, source: str = LAB, **extra: Any) -> dict[str, Any]:
    return {**event([flow(quantity=kg)], id=id, source=source), "supersedes": target, **extra}


def send(factory: sessionmaker[Session], *events: dict[str, Any]) -> IngestOutcome:
    with transaction(factory) as s:
        outcome = ingest(s, list(events))
    with transaction(factory) as s:
        recompute.recompute_dirty(s, 10_000)
    return outcome


def consumed_kg(factory: sessionmaker[Session]) -> float:
    """Filament consumed, as the day rollups hold it."""
    with transaction(factory) as s:
        micro = s.scalar(
            select(func.coalesce(func.sum(FlowRollup.amount), 0)).where(
                FlowRollup.action == "consume"
            )
        )
    return int(micro or 0) / 1e6


def test_a_retraction_takes_the_events_flows_out_and_keeps_both_events(
    factory: sessionmaker[Session],
) -> None:
    register(factory)
    # 240 kg where 2.40 kg was meant, beside a good 1 kg.
    send(factory, event([flow(quantity=240)], id="typo"), event([flow(quantity=1)], id="ok"))
    assert consumed_kg(factory) == 241.0
    outcome = send(factory, retract("typo", "typo-retracted", reason="kg for g"))
    assert outcome.result.model_dump() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert consumed_kg(factory) == 1.0  # 241 - 240
    with transaction(factory) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 3  # nothing deleted
        row = s.scalars(select(Correction)).one()
        assert (row.kind, row.rank, row.reason) == ("retract", 1, "kg for g")


def test_a_replacement_counts_instead_in_its_own_window(factory: sessionmaker[Session]) -> None:
    register(factory)
    send(factory, event([flow(quantity=240)], id="typo", time="2026-03-10T10:00:00+01:00"))
    # The replacement is dated the next day: the original's window loses 240 kg, the
    # replacement's gains 2.4 kg.
    fix = supersede("typo", "typo-fix", 2.4)
    fix["time"] = "2026-03-11T09:00:00+01:00"
    send(factory, fix)
    with transaction(factory) as s:
        days = dict(
            s.execute(
                select(FlowRollup.day, func.sum(FlowRollup.amount)).group_by(FlowRollup.day)
            ).all()
        )
    assert {str(d): v for d, v in days.items()} == {"2026-03-11": 2_400_000}
    assert consumed_kg(factory) == 2.4


def test_the_newest_correction_counts(factory: sessionmaker[Session]) -> None:
    register(factory)
    send(factory, event([flow(quantity=240)], id="o"))
    send(factory, supersede("o", "fix-1", 24))  # still wrong
    assert consumed_kg(factory) == 24.0
    send(factory, supersede("o", "fix-2", 2.4))
    assert consumed_kg(factory) == 2.4
    send(factory, retract("o", "gone"))
    assert consumed_kg(factory) == 0.0
    send(factory, supersede("o", "back", 3))  # a replacement after a retraction counts again
    assert consumed_kg(factory) == 3.0
    with transaction(factory) as s:
        ranks = s.execute(select(Correction.rank, Correction.kind).order_by(Correction.rank))
        assert [tuple(r) for r in ranks] == [
            (1, "supersede"), (2, "supersede"), (3, "retract"), (4, "supersede"),
        ]  # fmt: skip


def test_in_one_batch_the_last_correction_counts_and_the_original_may_come_first(
    factory: sessionmaker[Session],
) -> None:
    register(factory)
    outcome = send(
        factory,
        supersede("o", "fix-1", 24),
        event([flow(quantity=240)], id="o"),
        supersede("o", "fix-2", 2.4),
    )
    assert outcome.result.accepted == 3
    assert consumed_kg(factory) == 2.4


def test_the_same_correction_twice_counts_once(factory: sessionmaker[Session]) -> None:
    register(factory)
    send(factory, event([flow(quantity=240)], id="o"))
    fix = supersede("o", "fix", 2.4)
    first = send(factory, fix, fix)
    again = send(factory, fix)
    assert (first.result.accepted, first.result.duplicates) == (1, 1)
    assert (again.result.accepted, again.result.duplicates) == (0, 1)
    assert consumed_kg(factory) == 2.4
    with transaction(factory) as s:
        assert s.scalar(select(func.count()).select_from(Correction)) == 1


def test_what_cannot_be_corrected_is_refused_by_index(factory: sessionmaker[Session]) -> None:
    register(factory)
    meter = f"/{CITY}/{SITE}/{DEVICE}"
    send(
        factory,
        event([flow(quantity=5)], id="o"),
        event({"energy_kwh_total": 10.0}, id="m1", source=meter, type="fabcity.meter.reading"),
    )
    send(factory, retract("o", "r1"))
    outcome = send(
        factory,
        retract("nothing", "r2"),  # 0: unknown
        retract("r1", "r3"),  # 1: a correction
        retract("r4", "r4"),  # 2: itself
        retract("m1", "r5", source=meter),  # 3: a counter
        retract("o", "r6", source=f"/{CITY}/{OTHER_SITE}"),  # 4: not of that source
        {**retract("o", "r7"), "supersedes": "o"},  # 5: both ways at once
        supersede("o", "ok", 1),
    )
    reasons = {r.index: r.error for r in outcome.result.rejected}
    assert "no event 'nothing'" in reasons[0]
    assert "is itself a correction" in reasons[1]
    assert "cannot retract itself" in reasons[2]
    assert "cumulative meter reading" in reasons[3]
    assert "no event 'o' of '/testville/hub'" in reasons[4]
    assert "`supersedes` belongs on a replacement" in reasons[5]
    assert (outcome.result.accepted, outcome.result.duplicates) == (1, 0)
    with transaction(factory) as s:
        kept = set(s.scalars(select(Event.event_id)))
    assert kept == {"o", "m1", "r1", "ok"}  # refused corrections are not stored
    assert consumed_kg(factory) == 1.0


def test_a_correction_refused_for_its_source_scope(factory: sessionmaker[Session]) -> None:
    # Authority is the source: a key of the hub cannot name the lab's event at all.
    register(factory)
    send(factory, event([flow(quantity=5)], id="o"))
    with transaction(factory) as s:
        outcome = ingest(s, [retract("o", "r")], scope=f"/{CITY}/{OTHER_SITE}")
    assert "outside what this key may write" in outcome.result.rejected[0].error
    assert consumed_kg(factory) == 5.0


def test_the_originals_hour_is_marked_and_a_rebuild_agrees(
    factory: sessionmaker[Session],
) -> None:
    register(factory)
    send(factory, event([flow(quantity=240)], id="o"))
    with transaction(factory) as s:
        outcome = ingest(s, [supersede("o", "fix", 2.4)])
        dirty = s.execute(select(DirtyWindow.day, DirtyWindow.hour)).all()
    assert [(str(d), h) for d, h in dirty] == [("2026-03-10", 10)]
    assert outcome.windows_marked == 1  # the same hour: the replacement's time is the same
    with transaction(factory) as s:
        recompute.recompute_dirty(s, 100)
        before = sorted(tuple(r) for r in s.execute(select(FlowRollup.__table__)))
        flows = s.scalar(select(func.count()).select_from(Flow))
    rebuild(factory, from_events=True)
    with transaction(factory) as s:
        after = sorted(tuple(r) for r in s.execute(select(FlowRollup.__table__)))
        assert s.scalar(select(func.count()).select_from(Flow)) == flows == 1
    assert before == after


def test_concurrent_corrections_are_ranked_one_after_the_other(
    pg_factory: sessionmaker[Session],
) -> None:
    """Two replacements of one event in two transactions at once: the second waits for the
    first to commit, then ranks after it and takes its flows out. Without the lock on the
    original both read no correction, both take rank 1, and the second fails its commit."""
    send(pg_factory, event([flow(quantity=240)], id="o"))
    first_in = threading.Event()
    release = threading.Event()
    second_done = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction(pg_factory) as s:
                ingest(s, [supersede("o", "fix-a", 24)])
                first_in.set()
                release.wait(10)
        except BaseException as exc:
            errors.append(exc)
            first_in.set()

    def second() -> None:
        try:
            first_in.wait(10)
            with transaction(pg_factory) as s:
                ingest(s, [supersede("o", "fix-b", 2.4)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    first_in.wait(10)
    # The second waits on the original's lock while the first holds it.
    assert not second_done.wait(1.0)
    release.set()
    for t in threads:
        t.join(20)
    assert not errors, errors
    with transaction(pg_factory) as s:
        recompute.recompute_dirty(s, 100)
        ranks = dict(
            s.execute(
                select(Event.event_id, Correction.rank).join(
                    Correction, Correction.event_pk == Event.id
                )
            ).all()
        )
    assert ranks == {"fix-a": 1, "fix-b": 2}
    assert consumed_kg(pg_factory) == 2.4
