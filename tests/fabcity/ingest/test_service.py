"""The one ingest path, on both databases: stored once, flows derived, windows marked."""

from __future__ import annotations

from datetime import date

import msgspec
import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import DirtyWindow, Event, Flow, FlowRollup, PendingRollup
from fabcity.ingest.service import ingest
from fabcity.rollups import recompute
from tests.support.city import CITY, DEVICE, SITE, count_rows, event, flow, register


def test_event_stored_once_however_often_it_arrives(factory: sessionmaker[Session]) -> None:
    register(factory)
    e = event([flow(quantity=500, unit="g"), flow("produce", "part", 2, "count")], id="e-1")
    with transaction(factory) as s:
        first = ingest(s, [e, e])
    with transaction(factory) as s:
        again = ingest(s, [e])
    assert (first.result.accepted, first.result.duplicates) == (1, 1)
    assert (again.result.accepted, again.result.duplicates) == (0, 1)
    assert count_rows(factory, Event) == 1
    assert count_rows(factory, Flow) == 2
    with transaction(factory) as s:
        consumed = s.scalar(select(Flow.amount).where(Flow.action == "consume"))
        state = s.scalar(select(Flow.state).where(Flow.action == "consume"))
    assert consumed == 500_000  # millionths of a kg
    assert state == "reported"


def test_a_quantity_too_large_to_store_is_refused_not_raised(
    factory: sessionmaker[Session],
) -> None:
    # Amounts are 64-bit millionths: past that an insert would fail the whole batch, again at
    # every retry. The schema bounds a quantity; a larger unit is caught after conversion.
    register(factory)
    batch = [
        event([flow(quantity=2e9)], id="huge"),
        event([flow(quantity=1e9, unit="t")], id="converted"),
        event([flow(quantity=5)], id="fine"),
    ]
    with transaction(factory) as s:
        outcome = ingest(s, batch)
    assert outcome.result.accepted == 1
    reasons = {r.index: r.error for r in outcome.result.rejected}
    assert "less than or equal to 1000000000" in reasons[0]
    assert "too large to store" in reasons[1]
    assert count_rows(factory, Flow) == 1


def test_a_meters_total_from_a_site_source_is_refused_not_raised(
    factory: sessionmaker[Session],
) -> None:
    # A cumulative reading's flow is its difference from the same meter's reading before: a
    # site's own source is no meter, and settling it raised, failing the whole batch (a 500,
    # and a bridge batch retried for ever). The site's own energy comes as `energy_kwh`.
    register(factory)
    batch = [
        event({"energy_kwh_total": 12.5}, id="total", type="fabcity.meter.reading"),
        event({"energy_kwh": 1.5}, id="used", type="fabcity.meter.reading"),
        event({"energy_kwh_total": 3.0}, id="metered", type="fabcity.meter.reading",
              source=f"/{CITY}/{SITE}/{DEVICE}"),
    ]  # fmt: skip
    with transaction(factory) as s:
        outcome = ingest(s, batch)
    assert outcome.result.accepted == 2
    (refused,) = outcome.result.rejected
    assert refused.index == 0
    assert "/city/site/device" in refused.error
    assert count_rows(factory, Event) == 2


def test_a_time_outside_the_years_in_utc_is_refused_not_raised(
    factory: sessionmaker[Session],
) -> None:
    # Valid RFC 3339, and the models accept it, but in UTC it falls before year 1 or after
    # 9999: converting it raised OverflowError, which failed the whole batch.
    register(factory)
    batch = [
        event([flow()], id="early", time="0001-01-01T00:30:00+01:00"),
        event([flow()], id="late", time="9999-12-31T23:30:00-01:00"),
        event([flow()], id="fine", time="0001-01-01T00:30:00Z"),
    ]
    with transaction(factory) as s:
        outcome = ingest(s, batch)
    assert outcome.result.accepted == 1
    reasons = {r.index: r.error for r in outcome.result.rejected}
    assert "outside years 1 to 9999" in reasons[0] and "outside years 1 to 9999" in reasons[1]


def test_an_event_json_cannot_hold_is_refused_not_raised(factory: sessionmaker[Session]) -> None:
    # An adapter builds events as Python dicts: an extension could hold an integer past 64
    # bits, which the stored JSON cannot. Raised, it failed the whole batch.
    register(factory)
    batch = [event([flow()], id="big") | {"counter": 2**70}, event([flow()], id="fine")]
    with transaction(factory) as s:
        outcome = ingest(s, batch)
    assert outcome.result.accepted == 1
    assert "cannot be stored as JSON" in outcome.result.rejected[0].error


def test_text_with_a_nul_character_is_refused_not_raised(factory: sessionmaker[Session]) -> None:
    # PostgreSQL's text types cannot hold NUL: stored, it failed the COPY of the whole batch.
    # The same event is refused on SQLite, so that both databases take the same events.
    register(factory)
    batch = [
        event([flow(material="PLA\x00")], id="in-a-flow"),
        event([flow()], id="in-the-id\x00"),
        event([flow()], id="in-an-extension") | {"note": "\x00"},
        event([flow(material="\\u0000 as text")], id="backslash-u-zeros"),
        event([flow(material="\\\x00")], id="backslash-then-nul"),
    ]
    with transaction(factory) as s:
        outcome = ingest(s, batch)
    reasons = {r.index: r.error for r in outcome.result.rejected}
    assert sorted(reasons) == [0, 1, 2, 4]
    assert all("NUL character" in reason for reason in reasons.values())
    assert outcome.result.accepted == 1
    with transaction(factory) as s:
        assert s.scalar(select(Flow.material)) == "\\u0000 as text"


def test_events_given_as_json_texts_are_read_and_stored_as_sent(
    factory: sessionmaker[Session],
) -> None:
    # The HTTP API hands a batch's events over as their texts: read fast when plain, by the
    # models otherwise, refused by index when not JSON; repeats counted as with dicts.
    register(factory)
    plain = event([flow(quantity=500, unit="g")], id="plain") | {"traceparent": "x"}
    shorthand = event(flow(ring="cell"), id="cell")
    texts = [msgspec.Raw(orjson.dumps(e)) for e in (plain, shorthand, plain)]
    texts.append(msgspec.Raw(b'{"id": "broken", "source": "\\ud800"}'))
    with transaction(factory) as s:
        outcome = ingest(s, texts)
    assert (outcome.result.accepted, outcome.result.duplicates) == (2, 1)
    assert [r.index for r in outcome.result.rejected] == [3]
    assert "not valid JSON" in outcome.result.rejected[0].error
    with transaction(factory) as s:
        stored = {p["id"]: p for p in s.scalars(select(Event.payload))}
        amounts = sorted(s.scalars(select(Flow.amount)))
    assert stored == {"plain": plain, "cell": shorthand}
    assert amounts == [500_000, 1_000_000]


def test_device_events_are_measured_and_mark_their_local_day(
    factory: sessionmaker[Session],
) -> None:
    register(factory, timezone="Asia/Tokyo")
    # 20:00 UTC on 1 May is already 2 May in Tokyo.
    e = event(flow(), source=f"/{CITY}/{SITE}/{DEVICE}", time="2026-05-01T20:00:00Z")
    with transaction(factory) as s:
        outcome = ingest(s, [e])
    assert outcome.windows_marked == 1
    with transaction(factory) as s:
        stored = s.scalars(select(Event)).one()
        assert stored.day == date(2026, 5, 2)
        assert s.scalar(select(Flow.state)) == "measured"
        # A mark for the worker, in the same transaction, names the event and its flow.
        mark = s.scalars(select(PendingRollup)).one()
        flow_id = s.scalar(select(Flow.id))
        assert (mark.city_id, mark.event_lo, mark.event_hi) == (
            stored.city_id,
            stored.id,
            stored.id,
        )
        assert (mark.flow_lo, mark.flow_hi) == (flow_id, flow_id)
        assert s.scalars(select(DirtyWindow)).all() == []


def test_bad_events_store_nothing_and_say_why(factory: sessionmaker[Session]) -> None:
    register(factory)
    bad = [
        event(flow(resource="unobtainium")),
        event(flow("produce", "part", 1, "kg")),
        event(flow(), source="/nowhere/lab"),
        event(flow(), source=f"/{CITY}/{SITE}/ghost"),
        {"specversion": "1.0", "id": "x", "source": f"/{CITY}/{SITE}"},
        "not an object",
    ]
    with transaction(factory) as s:
        outcome = ingest(s, bad)
    assert outcome.result.accepted == 0
    assert [r.index for r in outcome.result.rejected] == list(range(len(bad)))
    errors = [r.error for r in outcome.result.rejected]
    assert "unobtainium" in errors[0]
    assert "'count'" in errors[1]
    assert "nowhere" in errors[2]
    assert "ghost" in errors[3]
    assert "type" in errors[4]
    assert count_rows(factory, Event) == 0
    assert count_rows(factory, DirtyWindow) == 0
    assert count_rows(factory, PendingRollup) == 0


def test_recompute_sums_flows_per_window_and_clears_the_marks(
    factory: sessionmaker[Session],
) -> None:
    register(factory)
    with transaction(factory) as s:
        ingest(
            s,
            [
                event([flow(quantity=2), flow(quantity=1, ring="beyond")]),
                event(flow(quantity=3)),
                event(flow(quantity=4), time="2026-03-11T10:00:00+01:00"),
            ],
        )
    with transaction(factory) as s:
        assert len(recompute.recompute_dirty(s, 100).touched) == 2
    with transaction(factory) as s:
        rows = s.execute(
            select(FlowRollup.day, FlowRollup.ring, FlowRollup.amount, FlowRollup.flows).order_by(
                FlowRollup.day, FlowRollup.ring
            )
        ).all()
        assert s.scalar(select(func.count()).select_from(PendingRollup)) == 0
    assert [tuple(r) for r in rows] == [
        (date(2026, 3, 10), "beyond", 1_000_000, 1),
        (date(2026, 3, 10), "city", 5_000_000, 2),
        (date(2026, 3, 11), "city", 4_000_000, 1),
    ]
    # A late event for the 10th is added to that window only, and its rollup is corrected.
    with transaction(factory) as s:
        ingest(s, [event(flow(quantity=10, ring="beyond"))])
    with transaction(factory) as s:
        [(hour_day, hour)] = [(d, h) for _, d, h in recompute.recompute_dirty(s, 100).touched]
        assert (hour_day, hour) == (date(2026, 3, 10), 10)
    with transaction(factory) as s:
        beyond = s.scalar(
            select(FlowRollup.amount).where(
                FlowRollup.day == date(2026, 3, 10), FlowRollup.ring == "beyond"
            )
        )
    assert beyond == 11_000_000
