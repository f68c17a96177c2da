"""Corrections over MQTT, through the real Mosquitto, on SQLite and PostgreSQL.

On a native topic the source is the topic's device, so a device corrects its own events only;
what cannot be corrected is dead-lettered with its reason, and can be replayed later (a
correction that came before its original goes through once the original is there).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter
from fabcity.ingest import replay
from fabcity.registry import entries
from schemas import api
from services.mqtt.bridge import Bridge
from tests.conftest import settings_for
from tests.services.mqtt.test_bridge import input_kg_today, publish
from tests.support.city import CITY, DEVICE, SITE, event, flow, register
from tests.support.mqtt import publisher
from tests.support.procs import wait_until
from workers.dispatch import NoDispatch

PRINTER = f"/{CITY}/{SITE}/{DEVICE}"
LASER = f"/{CITY}/{SITE}/laser"


@pytest.fixture
def city(db_url: str) -> sessionmaker[Session]:
    factory = make_sessionmaker(make_engine(db_url))
    register(factory)
    with transaction(factory) as s:
        lab = entries.get_site(s, entries.get_city(s, CITY), SITE)
        entries.create_device(s, lab, api.DeviceIn(slug="laser", name="Laser", kind="laser"))
    return factory


def test_a_device_corrects_its_own_events_and_the_rest_is_dead_lettered(
    db_url: str, city: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    settings = settings_for(db_url)
    prefix = settings.mqtt_topic_prefix
    printer_topic = f"{prefix}/{CITY}/{SITE}/{DEVICE}/events"
    laser_topic = f"{prefix}/{CITY}/{SITE}/laser/events"
    bridge = Bridge(settings, city, NoDispatch()).start()
    client = publisher(settings.mqtt_host, settings.mqtt_port)
    early = event(
        {"id": "late", "reason": "sent before its original"},
        id="early-retraction",
        source=PRINTER,
        type="fabcity.event.retracted",
        time=None,
    )
    try:
        wait_until(bridge.connected.is_set, 10)
        publish(client, printer_topic, early)  # dead letter: no such event yet
        wait_until(lambda: bridge.dead_lettered == 1, 15)
        publish(
            client, printer_topic, event(flow(quantity=240), id="typo", source=PRINTER, time=None)
        )
        publish(
            client, printer_topic, event(flow(quantity=3), id="late", source=PRINTER, time=None)
        )
        wait_until(lambda: bridge.stored == 2, 15)
        fixed = {
            **event(flow(quantity=2.4), id="fix", source=PRINTER, time=None),
            "supersedes": "typo",
        }
        publish(client, printer_topic, fixed)
        publish(client, printer_topic, fixed)  # a redelivery or a repeat: once
        # The laser's identity names the printer's event: on its own topic the source is the
        # laser, whose events hold no `typo`; with the printer's source, the topic refuses it.
        laser_try = event({"id": "typo"}, id="l1", source=LASER, type="fabcity.event.retracted")
        forged = event({"id": "typo"}, id="l2", source=PRINTER, type="fabcity.event.retracted")
        publish(client, laser_topic, laser_try)
        publish(client, laser_topic, forged)
        wait_until(lambda: bridge.stored == 3 and bridge.dead_lettered == 3, 15)
    finally:
        bridge.stop()
        client.loop_stop()
    # 2.4 (the typo superseded) + 3 (`late`, not yet retracted)
    assert input_kg_today(city) == pytest.approx(5.4)
    with transaction(city) as s:
        letters = {row.topic: row.reason for row in s.scalars(select(DeadLetter))}
        reasons = sorted(s.scalars(select(DeadLetter.reason)))
    assert any("no event 'late'" in r for r in reasons), reasons
    assert any("no event 'typo' of '/testville/lab/laser'" in r for r in reasons), reasons
    assert any("does not match its topic" in r for r in reasons), reasons
    assert set(letters) == {printer_topic, laser_topic}
    # Its original has come: the early retraction, replayed, now goes through.
    with transaction(city) as s:
        first = s.scalar(select(DeadLetter.id).where(DeadLetter.topic == printer_topic))
        assert first is not None
        outcome = replay.replay(s, [first], prefix)
    assert outcome.ingested == 1, outcome
    assert input_kg_today(city) == pytest.approx(2.4)
