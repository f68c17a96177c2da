"""Corrections as an attacker uses them: to take another tenant's figures out, to flood the
ingest path, and with a device's stolen broker identity. On SQLite and PostgreSQL.

A correction names an event of its own `source`, and the source is held to the credentials
(a key's scope over HTTP, the topic over MQTT): another tenant's event cannot even be named,
and a refusal reads the same whether the id exists elsewhere or nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import Correction, DirtyWindow, Event, Flow, FlowRollup
from fabcity.ingest.service import ingest
from fabcity.ingest.topics import to_event
from fabcity.registry import entries
from fabcity.rollups import recompute
from schemas import api
from tests.support.city import CITY, DEVICE, SITE, event, flow, register

LAB = f"/{CITY}/{SITE}"
PRINTER = f"/{CITY}/{SITE}/{DEVICE}"
ELSEWHERE = "/otherville/lab"


@pytest.fixture
def city(db_url: str) -> Iterator[tuple[sessionmaker[Session], Engine]]:
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    register(factory)
    with transaction(factory) as s:
        other = entries.create_city(
            s, api.CityIn(slug="otherville", name="O", country="NL", timezone="Europe/Amsterdam")
        )
        entries.create_site(s, other, api.SiteIn(slug="lab", name="Lab"))
        lab = entries.get_site(s, entries.get_city(s, CITY), SITE)
        entries.create_device(s, lab, api.DeviceIn(slug="laser", name="Laser", kind="laser"))
    yield factory, engine
    engine.dispose()


def retraction(target: str, id: str, source: str = LAB) -> dict[str, Any]:
    return event({"id": target}, id=id, source=source, type="fabcity.event.retracted")


def replacement(target: str, id: str, kg: float) -> dict[str, Any]:
    return {**event([flow(quantity=kg)], id=id), "supersedes": target}


def counted_kg(factory: sessionmaker[Session], city_id: int | None = None) -> float:
    with transaction(factory) as s:
        recompute.recompute_dirty(s, 10_000)
        query = select(func.coalesce(func.sum(FlowRollup.amount), 0))
        if city_id is not None:
            query = query.where(FlowRollup.city_id == city_id)
        return int(s.scalar(query) or 0) / 1e6


class TestAnotherTenantsEvent:
    def test_a_key_of_another_city_cannot_name_it_nor_learn_it_exists(
        self, city: tuple[sessionmaker[Session], Engine]
    ) -> None:
        factory, _ = city
        with transaction(factory) as s:
            ingest(s, [event([flow(quantity=5)], id="theirs")])
        scope = ELSEWHERE  # the other city's site key
        with transaction(factory) as s:
            named = ingest(s, [retraction("theirs", "x1")], scope=scope).result.rejected
            own = ingest(s, [retraction("theirs", "x2", ELSEWHERE)], scope=scope).result
            never = ingest(s, [retraction("never", "x3", ELSEWHERE)], scope=scope).result
        assert "outside what this key may write" in named[0].error
        # `theirs` exists in testville, `never` nowhere: the refusal reads the same.
        assert own.rejected[0].error == never.rejected[0].error.replace("never", "theirs")
        assert counted_kg(factory) == 5.0
        with transaction(factory) as s:
            assert s.scalar(select(func.count()).select_from(Correction)) == 0


class TestFloods:
    def test_a_batch_of_corrections_costs_the_same_statements_whatever_its_size(
        self, city: tuple[sessionmaker[Session], Engine]
    ) -> None:
        """At first each correction looked up and deleted its original's flows on its own, so
        the statements grew with the batch; now they are the same few for 10 as for 400."""
        factory, engine = city
        originals = [event([flow(quantity=1)], id=f"o{n}") for n in range(400)]
        with transaction(factory) as s:
            assert ingest(s, originals).result.accepted == 400
        statements: list[str] = []

        def counted(*args: Any) -> None:
            # Storing events and flows is ingest's own (SQLite inserts flows a row at a time,
            # for any event): what is counted is what corrections add.
            if not args[2].startswith(("INSERT INTO flows", "INSERT INTO events")):
                statements.append(args[2])

        sa_event.listen(engine, "before_cursor_execute", counted)
        try:
            used = []
            for size, prefix in ((10, "a"), (400, "b")):
                statements.clear()
                fixes = [replacement(f"o{n}", f"{prefix}{n}", 2) for n in range(size)]
                with transaction(factory) as s:
                    assert ingest(s, fixes).result.accepted == size
                used.append(len(statements))
        finally:
            sa_event.remove(engine, "before_cursor_execute", counted)
        assert used[0] == used[1], used
        # 400 replacements of 2 kg, the last 390 replacing the first 10's originals' too.
        assert counted_kg(factory) == 800.0

    def test_a_thousand_replacements_of_one_event_leave_one_counting(
        self, city: tuple[sessionmaker[Session], Engine]
    ) -> None:
        factory, _ = city
        with transaction(factory) as s:
            ingest(s, [event([flow(quantity=240)], id="o")])
        counted_kg(factory)
        flood = [replacement("o", f"f{n}", n + 1) for n in range(1000)]
        started = datetime.now(UTC)
        with transaction(factory) as s:
            outcome = ingest(s, flood)
            dirty = s.scalar(select(func.count()).select_from(DirtyWindow))
        seconds = (datetime.now(UTC) - started).total_seconds()
        assert outcome.result.accepted == 1000
        assert dirty == 1  # the original's hour, once
        assert seconds < 10, seconds
        with transaction(factory) as s:
            ranks = list(s.scalars(select(Correction.rank).order_by(Correction.rank)))
            flows = s.scalar(select(func.count()).select_from(Flow))
        assert ranks == list(range(1, 1001))
        assert flows == 1  # only the newest replacement's flow is left
        assert counted_kg(factory) == 1000.0  # the last: f999, of 1000 kg

    def test_retractions_of_unknown_events_store_nothing(
        self, city: tuple[sessionmaker[Session], Engine]
    ) -> None:
        factory, _ = city
        with transaction(factory) as s:
            outcome = ingest(s, [retraction(f"guess-{n}", f"r{n}") for n in range(500)])
        assert outcome.result.accepted == 0
        assert len(outcome.result.rejected) == 500
        assert all("no event 'guess-" in r.error for r in outcome.result.rejected)
        with transaction(factory) as s:
            assert s.scalar(select(func.count()).select_from(Event)) == 0
            assert s.scalar(select(func.count()).select_from(Correction)) == 0


class TestAStolenBrokerIdentity:
    """The laser's broker credentials in an attacker's hands: the broker lets them publish
    on the laser's topics only (tests/security/test_broker.py), and the bridge's writer reads
    the source from the topic. The printer's events stay out of reach. The same through a
    real Mosquitto: tests/services/mqtt/test_bridge_corrections.py."""

    def test_the_printers_events_cannot_be_retracted_from_the_lasers_topic(
        self, city: tuple[sessionmaker[Session], Engine]
    ) -> None:
        factory, _ = city
        with transaction(factory) as s:
            ingest(s, [event([flow(quantity=5)], id="p1", source=PRINTER)])
        now = datetime.now(UTC)
        topic = f"fabcity/v1/{CITY}/{SITE}/laser/events"
        forged = to_event(topic, orjson.dumps(retraction("p1", "l1", PRINTER)), "fabcity/v1", now)
        assert forged.event is None
        assert "does not match its topic" in (forged.reason or "")
        own = to_event(
            topic, orjson.dumps(retraction("p1", "l2", f"/{CITY}/{SITE}/laser")), "fabcity/v1", now
        )
        assert own.event is not None
        with transaction(factory) as s:
            refused = ingest(s, [own.event]).result.rejected
        assert "no event 'p1' of '/testville/lab/laser'" in refused[0].error
        assert counted_kg(factory) == 5.0
