"""Any sequence of events and corrections gives the rollups of the corrected history.

Random events (those of `test_rebuild`), then retractions and replacements of them (and some
corrections of corrections, which must be refused), each arriving after what it corrects, with
repeats, in random batches, with recomputes, rebuilds and design registrations between them.
Two promises, on SQLite and PostgreSQL:

- the flows and every rollup equal those of `rebuild(from_events=True)`, to the last digit;
- the flow rollups equal those of the corrected history ingested afresh: each original
  replaced by its newest correction's event (a replacement, without `supersedes`) or left out
  (a retraction), worked out here independently of the code under test.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import Correction, FlowRollup, FlowRollupHour, FlowRollupMonth
from fabcity.ingest.rebuild import rebuild
from fabcity.ingest.service import ingest
from fabcity.rollups import recompute
from tests.fabcity.ingest import test_rebuild as base
from tests.fabcity.ingest.test_rebuild import STEPS, a_flow, an_event

Batches = list[list[dict[str, Any]]]
History = tuple[Batches, list[tuple[str, int]]]


def _is_counter(event: dict[str, Any]) -> bool:
    return event["type"] == "fabcity.meter.reading"


@st.composite
def a_correction(
    draw: st.DrawFn, number: int, target: dict[str, Any], of_correction: bool
) -> dict[str, Any]:
    """A retraction or a replacement of `target`, from its source."""
    head = {"specversion": "1.0", "id": f"c{number}", "source": target["source"]}
    if draw(st.booleans()):
        reason = draw(st.sampled_from([None, "typed kg for g"]))
        data = {"id": target["id"], **({"reason": reason} if reason else {})}
        return {**head, "type": "fabcity.event.retracted", "data": data}
    at = draw(st.integers(0, base.MINUTES))
    flows = draw(st.lists(a_flow(), min_size=1, max_size=2))
    return {
        **head,
        "type": "fabcity.flow",
        "time": base.when(at),
        "supersedes": target["id"],
        "data": flows,
    }


@st.composite
def histories(draw: st.DrawFn) -> History:
    count = draw(st.integers(1, 15))
    events = [draw(an_event(n)) for n in range(count)]
    correctable = [e for e in events if not _is_counter(e)]
    fixes: list[dict[str, Any]] = []
    if correctable:
        for n in range(draw(st.integers(0, 12))):
            # Now and then a correction of a correction: refused whenever it comes.
            if fixes and draw(st.integers(0, 5)) == 0:
                fixes.append(draw(a_correction(n, draw(st.sampled_from(fixes)), True)))
            else:
                fixes.append(draw(a_correction(n, draw(st.sampled_from(correctable)), False)))
    repeats = draw(st.lists(st.sampled_from(events + fixes), max_size=8))
    arrivals: list[dict[str, Any]] = draw(st.permutations(events + repeats))
    # Each correction somewhere after the first arrival of what it names.
    for fix in fixes:
        named = fix["data"]["id"] if "supersedes" not in fix else fix["supersedes"]
        first = next(
            i for i, e in enumerate(arrivals) if e["id"] == named and e["source"] == fix["source"]
        )
        arrivals.insert(draw(st.integers(first + 1, len(arrivals))), fix)
    batches: Batches = []
    while arrivals:
        size = draw(st.integers(1, 8))
        batches.append(arrivals[:size])
        arrivals = arrivals[size:]
    steps = [(draw(st.sampled_from(STEPS)), draw(st.integers(1, 3))) for _ in batches]
    return batches, steps


def corrected_history(batches: Batches) -> list[dict[str, Any]]:
    """The history as it should count: every original replaced by its newest correction, in
    the order corrections were first seen, or left out; corrections of corrections ignored."""
    seen: set[tuple[str, str]] = set()
    originals: dict[tuple[str, str], dict[str, Any]] = {}
    corrections: set[tuple[str, str]] = set()
    order: list[tuple[str, str]] = []
    newest: dict[tuple[str, str], dict[str, Any] | None] = {}
    for batch in batches:
        fresh = []
        for e in batch:
            key = (e["source"], e["id"])
            if key not in seen and all(key != (f["source"], f["id"]) for f in fresh):
                fresh.append(e)
        # A batch's ordinary events are stored before its corrections are checked; a refused
        # correction is not stored, so a later copy of it is no duplicate.
        for e in fresh:
            named = e.get("supersedes") or (e["data"]["id"] if "retracted" in e["type"] else None)
            if named is None:
                originals[(e["source"], e["id"])] = e
                order.append((e["source"], e["id"]))
                seen.add((e["source"], e["id"]))
        for e in fresh:
            named = e.get("supersedes") or (e["data"]["id"] if "retracted" in e["type"] else None)
            if named is None:
                continue
            target = (e["source"], named)
            if target in originals and target not in corrections:
                corrections.add((e["source"], e["id"]))
                seen.add((e["source"], e["id"]))
                if "supersedes" in e:
                    plain = {k: v for k, v in e.items() if k != "supersedes"}
                    newest[target] = {**plain, "id": f"{e['id']}-as-plain"}
                else:
                    newest[target] = None
    out = []
    for key in order:
        if key in newest:
            replacement = newest[key]
            if replacement is not None:
                out.append(replacement)
        else:
            out.append(originals[key])
    return out


def flow_rollups(factory: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with transaction(factory) as s:
        for table in (FlowRollup, FlowRollupHour, FlowRollupMonth):
            out[table.__tablename__] = sorted(tuple(r) for r in s.execute(select(table.__table__)))
    return out


def clear(factory: sessionmaker[Session], designs_too: bool = True) -> None:
    with transaction(factory) as s:
        s.execute(delete(Correction))
        if not designs_too:
            kept = s.execute(select(base.Design.__table__)).all()
    base.clear(factory)
    if not designs_too and kept:
        with transaction(factory) as s:
            s.execute(base.Design.__table__.insert(), [r._asdict() for r in kept])


def check(factory: sessionmaker[Session], history: History) -> None:
    batches, steps = history
    clear(factory)
    for batch, (step, n) in zip(batches, steps, strict=True):
        with transaction(factory) as s:
            outcome = ingest(s, batch)
        for refused in outcome.result.rejected:
            assert "is itself a correction" in refused.error or "no event" in refused.error, (
                refused.error
            )
            assert batch[refused.index]["id"].startswith("c")
        base.take_step(factory, step, n)
    incremental = base.settled(factory)
    rebuild(factory, from_events=True)
    assert base.snapshot(factory) == incremental

    # The corrected history, afresh, with the same designs registered.
    expected_flows = {k: incremental[k] for k in ("day", "hour", "month")}
    clear(factory, designs_too=False)
    clean = corrected_history(batches)
    if clean:
        with transaction(factory) as s:
            assert not ingest(s, clean).result.rejected
        with transaction(factory) as s:
            recompute.recompute_dirty(s, 10_000)
    fresh = flow_rollups(factory)
    assert fresh["rollup_flows_day"] == expected_flows["day"]
    assert fresh["rollup_flows_hour"] == expected_flows["hour"]
    assert fresh["rollup_flows_month"] == expected_flows["month"]


@given(history=histories())
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_corrections_give_the_rollups_of_the_corrected_history(
    factory: sessionmaker[Session], history: History
) -> None:
    with transaction(factory) as s:
        registered = base.entries.list_cities(s)
    if not registered:
        base.register(factory)
    check(factory, history)
