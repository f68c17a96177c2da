"""The bridge on the real Mosquitto and PostgreSQL: stored before acknowledged, stored once."""

from __future__ import annotations

import json
import time
import uuid
from datetime import date

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import DeadLetter, Event
from fabcity.core.settings import Settings
from fabcity.read import queries
from fabcity.registry import changes, entries
from schemas import api
from services.mqtt.bridge import Bridge
from tests.conftest import settings_for
from tests.support.city import CITY, DEVICE, SITE, event, flow
from tests.support.faulty_bridge import EXIT_AFTER_COMMIT
from tests.support.mqtt import publisher
from tests.support.procs import FAULTY_BRIDGE, Proc, wait_until
from workers import jobs
from workers.dispatch import NoDispatch


def publish(client: mqtt.Client, topic: str, payload: object) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    client.publish(topic, body, qos=1).wait_for_publish(10)


def topic(settings: Settings, device: str = DEVICE) -> str:
    return f"{settings.mqtt_topic_prefix}/{CITY}/{SITE}/{device}/events"


def stored(factory: sessionmaker[Session], model: type = Event) -> int:
    with transaction(factory) as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def input_kg_today(factory: sessionmaker[Session]) -> float | None:
    jobs.recompute_dirty_windows(factory, 100)
    with transaction(factory) as s:
        series = queries.metric_series(s, CITY, ["input_kg"], None, None, "day", None)
    return series.series[0].points[-1].value


def test_published_events_reach_the_city_metric_once(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    settings = settings_for(pg_url)
    bridge = Bridge(settings, pg_factory, NoDispatch()).start()
    client = publisher(settings.mqtt_host, settings.mqtt_port)
    try:
        wait_until(bridge.connected.is_set, 10)
        wait_until(lambda: bridge.client.is_connected(), 10)
        full = event(flow(quantity=1.5), source=f"/{CITY}/{SITE}/{DEVICE}", time=None)
        publish(client, topic(settings), full)
        publish(client, topic(settings), full)  # a repeat: counted once
        publish(client, topic(settings), flow(quantity=250, unit="g"))  # a bare flow
        wait_until(lambda: bridge.stored == 2, 15)
    finally:
        bridge.stop()
        client.loop_stop()
    assert stored(pg_factory) == 2
    assert input_kg_today(pg_factory) == pytest.approx(1.75)


def test_what_cannot_become_an_event_is_dead_lettered_with_its_reason(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    settings = settings_for(pg_url)
    bridge = Bridge(settings, pg_factory, NoDispatch()).start()
    client = publisher(settings.mqtt_host, settings.mqtt_port)
    try:
        wait_until(bridge.connected.is_set, 10)
        publish(client, topic(settings), b"{not json")
        publish(client, topic(settings), flow(resource="unobtainium"))
        publish(client, topic(settings, "ghost"), flow())
        publish(client, topic(settings), event(flow(), source=f"/{CITY}/{SITE}/other"))
        wait_until(lambda: stored(pg_factory, DeadLetter) == 4, 15)
    finally:
        bridge.stop()
        client.loop_stop()
    with transaction(pg_factory) as s:
        reasons = sorted(s.scalars(select(DeadLetter.reason)))
    assert stored(pg_factory) == 0
    assert any("not JSON" in r for r in reasons)
    assert any("unobtainium" in r for r in reasons)
    assert any("ghost" in r for r in reasons)
    assert any("does not match its topic" in r for r in reasons)


def bridge_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "FABCITY_DATABASE_URL": settings.database_url,
        "FABCITY_MQTT_HOST": settings.mqtt_host,
        "FABCITY_MQTT_PORT": str(settings.mqtt_port),
        "FABCITY_MQTT_TOPIC_PREFIX": settings.mqtt_topic_prefix,
        "FABCITY_MQTT_CLIENT_ID": settings.mqtt_client_id,
        "FABCITY_MQTT_SHARE_GROUP": settings.mqtt_share_group,
        "FABCITY_WORKER_MODE": "local",
        **extra,
    }


def test_a_message_redelivered_after_the_bridge_died_before_its_ack_counts_once(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    settings = settings_for(pg_url)
    client = publisher(settings.mqtt_host, settings.mqtt_port)
    # This bridge commits its first batch and dies before acknowledging it.
    doomed = Proc(["bridge"], bridge_env(settings), program=FAULTY_BRIDGE)
    try:
        doomed.wait_for_output("subscribed to")
        first = event(
            flow(quantity=2),
            id=f"m-{uuid.uuid4().hex}",
            source=f"/{CITY}/{SITE}/{DEVICE}",
            time=None,
        )
        publish(client, topic(settings), first)
        assert doomed.popen.wait(20) == EXIT_AFTER_COMMIT
    finally:
        doomed.stop()
    assert stored(pg_factory) == 1

    # Published while no bridge runs: the broker keeps it in the bridge's session.
    second = event(flow(quantity=5), source=f"/{CITY}/{SITE}/{DEVICE}", time=None)
    publish(client, topic(settings), second)

    restarted = Proc(["bridge"], bridge_env(settings))
    try:
        restarted.wait_for_output("duplicates=1")
        wait_until(lambda: stored(pg_factory) == 2, 15)
    finally:
        restarted.stop()
        client.loop_stop()
    assert stored(pg_factory) == 2
    assert input_kg_today(pg_factory) == pytest.approx(7.0)


def test_a_bridge_alone_writes_with_two_threads_unless_told(sqlite_url: str) -> None:
    """Alone on PostgreSQL, one writer left the cores idle while it waited on each commit:
    two overlap one batch's commit with the next batch's work. SQLite takes one writer at a
    time. An operator's setting wins."""
    settings = settings_for(sqlite_url)
    assert settings.bridge_writers is None
    postgres = sessionmaker(create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    assert len(Bridge(settings, postgres, NoDispatch())._writers) == 2
    assert (
        len(Bridge(settings, sessionmaker(create_engine(sqlite_url)), NoDispatch())._writers) == 1
    )
    told = settings.model_copy(update={"bridge_writers": 3})
    assert len(Bridge(told, postgres, NoDispatch())._writers) == 3


def test_events_of_a_city_changing_zone_wait_unacknowledged_then_land_in_the_new_zone(
    pg_url: str,
    pg_factory: sessionmaker[Session],
    mosquitto: tuple[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While testville's events move to Tokyo's time, the bridge's batch of testville is
    refused as busy: not stored, not dead-lettered (nothing is wrong with it), tried again.
    Once the move commits it is stored, once, in the new zone."""
    monkeypatch.setattr(entries, "REGISTRY_WAIT_S", 0.2)
    settings = settings_for(pg_url)
    bridge = Bridge(settings, pg_factory, NoDispatch()).start()
    client = publisher(settings.mqtt_host, settings.mqtt_port)
    changing = pg_factory()
    try:
        wait_until(bridge.connected.is_set, 10)
        wait_until(lambda: bridge.client.is_connected(), 10)
        city = entries.get_city(changing, CITY)
        changes.update_city(changing, city, api.CityPatch(timezone="Asia/Tokyo"), "test")
        body = event(flow(), id="moving", source=f"/{CITY}/{SITE}/{DEVICE}",
                     time="2026-03-10T20:30:00Z")  # fmt: skip
        publish(client, topic(settings), body)
        time.sleep(1.5)  # several tries of 0.2 s each, and the bridge's pauses between them
        assert (stored(pg_factory), stored(pg_factory, DeadLetter)) == (0, 0)
        changing.commit()
        wait_until(lambda: bridge.stored == 1, 30)
    finally:
        changing.close()
        bridge.stop()
        client.loop_stop()
    assert stored(pg_factory, DeadLetter) == 0
    with transaction(pg_factory) as s:
        # By hand: 20:30 UTC on 10 March is 05:30 on the 11th in Tokyo (UTC+9).
        assert s.execute(select(Event.day, Event.hour)).all() == [(date(2026, 3, 11), 5)]
