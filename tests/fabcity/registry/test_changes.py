"""Registry changes that rewrite what was derived from stored events, against ingest running
at the same time, on the real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import Event, Flow
from fabcity.ingest.rebuild import rederive_device
from fabcity.ingest.service import ingest
from fabcity.registry import changes, entries
from schemas import api
from tests.fabcity.ingest.test_rebuild import register
from tests.support.city import CITY, SITE


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

    writer = threading.Thread(target=store)
    writer.start()
    writer.join(1.0)
    waited = writer.is_alive()
    changing.commit()
    changing.close()
    writer.join(30)

    with transaction(factory) as s:
        # By hand: 20:30 UTC is 05:30 the next morning in Tokyo (UTC+9); in Madrid (UTC+2 in
        # June) it would have been 22:30 on the 1st.
        assert s.execute(select(Event.day, Event.hour)).all() == [(date(2026, 6, 2), 5)]
        assert s.execute(select(Flow.day, Flow.hour)).all() == [(date(2026, 6, 2), 5)]
    assert waited
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

    writer = threading.Thread(target=store)
    writer.start()
    writer.join(1.0)
    waited = writer.is_alive()
    changing.commit()
    changing.close()
    writer.join(30)

    with transaction(factory) as s:
        inputs = s.execute(select(Flow.ring, Flow.amount).where(Flow.action == "consume"))
        # By hand: 0.25 kg of filament = 250,000 millionths of a kg, from the city.
        assert [tuple(r) for r in inputs if r.amount == 250_000] == [("city", 250_000)]
    assert waited
    engine.dispose()
