"""Registry changes that rewrite what was derived from stored events, against ingest running
at the same time, on the real PostgreSQL."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import Device, DirtyWindow, Event, Flow
from fabcity.ingest.rebuild import rederive_device
from fabcity.ingest.service import ingest
from fabcity.registry import changes, entries
from schemas import api
from tests.fabcity.ingest.test_rebuild import register
from tests.support.city import CITY, SITE
from tests.support.race import while_open


def test_an_event_stored_while_its_city_changes_zone_is_counted_in_the_new_one(
    pg_url: str,
) -> None:
    """A city moves from Madrid's time to Tokyo's; the move has not committed when an event
    arrives. The move cannot see that event to place it, so the event must not be placed in the
    old zone: ingest waits for the change, then reads the new zone."""
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)  # Europe/Madrid
    event = {"specversion": "1.0", "id": "z1", "time": "2026-06-01T20:30:00Z",
             "source": f"/{CITY}/{SITE}", "type": "fabcity.flow",
             "data": [{"action": "consume", "resource": "wood", "unit": "kg", "ring": "city",
                       "quantity": 2}]}  # fmt: skip

    changing = factory()
    city = entries.get_city(changing, CITY)
    changes.update_city(changing, city, api.CityPatch(timezone="Asia/Tokyo"), "test")

    def store() -> None:
        with transaction(factory) as s:
            assert not ingest(s, [event]).result.rejected

    assert while_open(changing, store)

    with transaction(factory) as s:
        # By hand: 20:30 UTC is 05:30 the next morning in Tokyo (UTC+9); in Madrid (UTC+2 in
        # June) it would have been 22:30 on the 1st.
        assert s.execute(select(Event.day, Event.hour)).all() == [(date(2026, 6, 2), 5)]
        assert s.execute(select(Flow.day, Flow.hour)).all() == [(date(2026, 6, 2), 5)]
    engine.dispose()


def test_a_job_stored_while_its_printer_changes_settings_is_derived_from_the_new_ones(
    pg_url: str,
) -> None:
    """The lab says its printer's filament comes from the city now; the change has not
    committed when a print job arrives. The job's filament must come from the city: ingest
    waits for the change (which re-derives the jobs it can see), then reads the new settings."""
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)  # the lab's printer, no settings: its filament comes from beyond
    job = {"specversion": "1.0", "id": "j1", "time": "2026-06-01T10:00:00Z",
           "source": f"/{CITY}/{SITE}/printer", "type": "fabcity.machine.job",
           "data": {"status": "completed", "started": "2026-06-01T09:00:00Z",
                    "ended": "2026-06-01T10:00:00Z", "mass_kg": 0.25}}  # fmt: skip

    changing = factory()
    city = entries.get_city(changing, CITY)
    site = entries.get_site(changing, city, SITE)
    printer = changes.get_device(changing, site, "printer")
    patch = api.DevicePatch(settings={"input_ring": "city"})
    changes.update_device(changing, city, site, printer, patch, "test", rederive_device)

    def store() -> None:
        with transaction(factory) as s:
            assert not ingest(s, [job]).result.rejected

    assert while_open(changing, store)

    with transaction(factory) as s:
        inputs = s.execute(select(Flow.ring, Flow.amount).where(Flow.action == "consume"))
        # By hand: 0.25 kg of filament = 250,000 millionths of a kg, from the city.
        assert [tuple(r) for r in inputs if r.amount == 250_000] == [("city", 250_000)]
    engine.dispose()


def test_a_device_removed_while_its_first_event_is_stored_is_retired_not_deleted(
    pg_url: str,
) -> None:
    """The printer has no events; its first one is being stored (not committed) when the lab
    removes the printer. An entry nothing refers to is deleted, one that events name is
    retired: the removal must see that event, not delete the printer under it."""
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)
    first = {"specversion": "1.0", "id": "p1", "time": "2026-06-01T10:00:00Z",
             "source": f"/{CITY}/{SITE}/printer", "type": "fabcity.flow",
             "data": [{"action": "consume", "resource": "wood", "unit": "kg", "ring": "city",
                       "quantity": 1}]}  # fmt: skip
    storing = factory()
    assert not ingest(storing, [first]).result.rejected  # not committed yet
    removals: list[api.Removal] = []

    def remove() -> None:
        with transaction(factory) as s:
            city = entries.get_city(s, CITY)
            site = entries.get_site(s, city, SITE)
            printer = changes.get_device(s, site, "printer")
            removals.append(changes.remove_device(s, city, site, printer, "test"))

    assert while_open(storing, remove)

    (removal,) = removals
    assert removal.outcome == "retired", removal
    with transaction(factory) as s:
        (device_id,) = s.execute(select(Event.device_id)).one()
        assert s.get(Device, device_id) is not None  # the event's device is still there
    engine.dispose()


def test_two_changes_of_one_device_derive_its_events_from_both(pg_url: str) -> None:
    """The printer becomes a laser cutter (its jobs cut wood, not filament) while, at the same
    moment, someone else sets where its material comes from, with the printer read before the
    first change committed. The second change must derive the stored jobs from the laser
    cutter, not from the printer it read: wood from the city."""
    engine = make_engine(pg_url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)
    job = {"specversion": "1.0", "id": "j1", "time": "2026-06-01T10:00:00Z",
           "source": f"/{CITY}/{SITE}/printer", "type": "fabcity.machine.job",
           "data": {"status": "completed", "started": "2026-06-01T09:00:00Z",
                    "ended": "2026-06-01T10:00:00Z", "mass_kg": 0.25}}  # fmt: skip
    with transaction(factory) as s:
        assert not ingest(s, [job]).result.rejected

    def found(s: Session) -> tuple[Any, Any, Any]:
        city = entries.get_city(s, CITY)
        site = entries.get_site(s, city, SITE)
        return city, site, changes.get_device(s, site, "printer")

    first = factory()
    city, site, printer = found(first)
    second = factory()
    read_before = found(second)  # the printer as it was
    changes.update_device(first, city, site, printer, api.DevicePatch(kind="laser"), "a",
                          rederive_device)  # fmt: skip

    def settings() -> None:
        patch = api.DevicePatch(settings={"input_ring": "city"})
        changes.update_device(second, *read_before, patch, "b", rederive_device)
        second.commit()

    assert while_open(first, settings)
    second.close()

    with transaction(factory) as s:
        inputs = s.execute(select(Flow.resource, Flow.ring, Flow.amount)
                           .where(Flow.action == "consume", Flow.amount == 250_000))  # fmt: skip
        # By hand: 0.25 kg of the laser cutter's material (wood), from the city.
        assert [tuple(r) for r in inputs] == [("wood", "city", 250_000)]
        printer = s.execute(select(Device.kind, Device.settings).where(Device.slug == "printer"))
        assert printer.all() == [("laser", {"input_ring": "city"})]
    engine.dispose()


def _day_of_hourly_events(factory: sessionmaker[Session]) -> None:
    """An event at half past each hour of 1 June 2026 (UTC), n kg of wood at hour n: in
    Madrid (UTC+2 in June) they fill 02:30 on the 1st to 01:30 on the 2nd."""
    with transaction(factory) as s:
        outcome = ingest(
            s,
            [
                {"specversion": "1.0", "id": f"h{n}", "time": f"2026-06-01T{n:02}:30:00Z",
                 "source": f"/{CITY}/{SITE}", "type": "fabcity.flow",
                 "data": [{"action": "consume", "resource": "wood", "unit": "kg",
                           "ring": "city", "quantity": n + 1}]}
                for n in range(24)
            ],
        )  # fmt: skip
        assert outcome.result.accepted == 24


def _moved(factory: sessionmaker[Session], timezone: str) -> dict[str, Any]:
    with transaction(factory) as s:
        city = entries.get_city(s, CITY)
        changes.update_city(s, city, api.CityPatch(timezone=timezone), "test")
    with transaction(factory) as s:
        events = {e: (d, h) for e, d, h in s.execute(select(Event.event_id, Event.day, Event.hour))}
        by_pk = dict(s.execute(select(Event.id, Event.event_id)).tuples().all())
        flows = {by_pk[pk]: (d, h, amount)
                 for pk, d, h, amount in s.execute(
                     select(Flow.event_pk, Flow.day, Flow.hour, Flow.amount))}  # fmt: skip
        dirty = set(s.execute(select(DirtyWindow.day, DirtyWindow.hour)).tuples().all())
    return {"events": events, "flows": flows, "dirty": dirty}


def test_a_new_zone_moves_every_hour_once_though_each_lands_where_another_was(
    factory: sessionmaker[Session],
) -> None:
    """Madrid to Tokyo is seven hours on in June: each hour of the day lands on the key of
    another hour of the same events (02:30 to 09:30, while 09:30's own go to 16:30). Moved a
    step at a time, the rows of an hour that received others would be moved again with them."""
    register(factory)  # Europe/Madrid
    _day_of_hourly_events(factory)
    moved = _moved(factory, "Asia/Tokyo")
    # By hand: 00:30Z is 09:30 in Tokyo (UTC+9) on 1 June; 14:30Z is 23:30; 15:30Z is 00:30
    # on the 2nd; 23:30Z is 08:30 on the 2nd.
    assert moved["events"]["h0"] == (date(2026, 6, 1), 9)
    assert moved["events"]["h14"] == (date(2026, 6, 1), 23)
    assert moved["events"]["h15"] == (date(2026, 6, 2), 0)
    assert moved["events"]["h23"] == (date(2026, 6, 2), 8)
    # Every hour once: 24 events in 24 hours, each flow with its event, its amount its own.
    assert len(set(moved["events"].values())) == 24
    for event, (day, hour) in moved["events"].items():
        assert moved["flows"][event] == (day, hour, (int(event[1:]) + 1) * 1_000_000)
    # Both the hours left (Madrid's 02:00 on the 1st to 01:00 on the 2nd) and the hours
    # entered (Tokyo's 09:00 on the 1st to 08:00 on the 2nd) are recomputed.
    left = {(date(2026, 6, 1), h) for h in range(2, 24)} | {(date(2026, 6, 2), h) for h in (0, 1)}
    entered = {(date(2026, 6, 1), h) for h in range(9, 24)} | {
        (date(2026, 6, 2), h) for h in range(9)
    }
    assert moved["dirty"] >= left | entered


def test_a_new_zone_half_an_hour_off_splits_each_hour_by_its_events(
    factory: sessionmaker[Session],
) -> None:
    """Madrid to Kolkata (UTC+5:30) cuts each of Madrid's hours in two: its events are placed
    one by one. 00:30Z is 06:00 in Kolkata, 00:10Z would have been 05:40."""
    register(factory)
    with transaction(factory) as s:
        outcome = ingest(
            s,
            [
                {"specversion": "1.0", "id": f"k{m}", "time": f"2026-06-01T00:{m:02}:00Z",
                 "source": f"/{CITY}/{SITE}", "type": "fabcity.flow",
                 "data": [{"action": "consume", "resource": "wood", "unit": "kg",
                           "ring": "city", "quantity": 1}]}
                for m in (10, 50)
            ],
        )  # fmt: skip
        assert outcome.result.accepted == 2
    moved = _moved(factory, "Asia/Kolkata")
    # By hand: both were Madrid's 02:00 (UTC+2); 00:10Z is 05:40 and 00:50Z 06:20 in Kolkata.
    assert moved["events"] == {"k10": (date(2026, 6, 1), 5), "k50": (date(2026, 6, 1), 6)}
    assert {e: (d, h) for e, (d, h, _) in moved["flows"].items()} == moved["events"]
    assert moved["dirty"] >= {(date(2026, 6, 1), h) for h in (2, 5, 6)}
