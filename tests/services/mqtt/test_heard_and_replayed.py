"""Through the real bridge and Mosquitto, on SQLite and PostgreSQL: a binary-mode CloudEvent
dead-lettered for want of its device is replayed with its MQTT 5 properties, and devices on
the native topics are seen (`last_seen`, `online`)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import DeadLetter, Device, Event
from fabcity.ingest.replay import replay
from fabcity.registry import entries
from schemas import api
from services.mqtt.bridge import Bridge, Heard
from tests.conftest import settings_for
from tests.support.city import CITY, DEVICE, SITE, flow
from tests.support.mqtt import publisher
from tests.support.procs import wait_until
from workers.dispatch import NoDispatch


def device(factory: sessionmaker[Session], slug: str) -> Device:
    with transaction(factory) as s:
        found = s.scalars(select(Device).where(Device.slug == slug)).one()
        s.expunge(found)
        return found


def add_device(factory: sessionmaker[Session], slug: str, **fields: object) -> int:
    with transaction(factory) as s:
        site = entries.get_site(s, entries.get_city(s, CITY), SITE)
        body = api.DeviceIn.model_validate({"slug": slug, "name": slug, **fields})
        return entries.create_device(s, site, body).id


def test_a_binary_mode_cloudevent_dead_lettered_is_replayed_with_its_properties(
    db_url: str, city: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    tag = "t" + uuid.uuid4().hex[:8]
    settings = settings_for(db_url, mqtt_adapter_topics=[f"{tag}/#"])
    bridge = Bridge(settings, city, NoDispatch()).start()
    client = publisher(*mosquitto)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/json"
    props.UserProperty = [
        ("ce_specversion", "1.0"),
        ("ce_id", f"{tag}-job-1"),
        ("ce_source", "urn:fablab:machine:laser-01"),
        ("ce_type", "fabcity.machine.job"),
        ("ce_time", "2026-01-02T10:45:34Z"),
    ]
    job = {
        "status": "completed",
        "started": "2026-01-02T10:15:00Z",
        "ended": "2026-01-02T10:45:34Z",
        "energy_kwh": 0.5,
    }
    try:
        wait_until(bridge.connected.is_set, 10)
        body = json.dumps(job).encode()
        client.publish(f"{tag}/laser", body, qos=1, properties=props).wait_for_publish(10)
        wait_until(lambda: bridge.adapters.letters_kept == 1, 15)
    finally:
        bridge.stop()
        client.loop_stop()
    with transaction(city) as s:
        letter = s.scalars(select(DeadLetter)).one()
        assert "no registered device" in letter.reason
        assert letter.content_type == "application/json"
        assert ["ce_id", f"{tag}-job-1"] in (letter.properties or [])
    laser = add_device(
        city, "laser", kind="laser", adapter="cloudevents", settings={"topic": f"{tag}/laser"}
    )
    with transaction(city) as s:
        done = replay(s, None, settings.mqtt_topic_prefix)
    # Without its properties the payload alone is no event ("specversion None").
    assert (done.ingested, done.still_dead, done.events) == (1, 0, 1)
    with transaction(city) as s:
        (event_id,) = s.scalars(select(Event.event_id).where(Event.device_id == laser))
        assert event_id == f"{tag}-job-1"
        assert s.scalar(select(func.count()).select_from(DeadLetter)) == 0


def test_a_device_on_its_native_topic_is_seen_and_online(
    db_url: str, city: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    settings = settings_for(db_url)
    add_device(city, "quiet")  # registered, never publishes
    bridge = Bridge(settings, city, NoDispatch()).start()
    client = publisher(*mosquitto)
    topic = f"{settings.mqtt_topic_prefix}/{CITY}/{SITE}/{DEVICE}/events"
    before = datetime.now(UTC) - timedelta(seconds=1)
    try:
        wait_until(bridge.connected.is_set, 10)
        client.publish(topic, json.dumps(flow()).encode(), qos=1).wait_for_publish(10)
        # Refused, but heard from all the same.
        client.publish(topic, b"{not json", qos=1).wait_for_publish(10)
        wait_until(lambda: bridge.stored == 1 and bridge.dead_lettered == 1, 15)
    finally:
        bridge.stop()
        client.loop_stop()
    printer = device(city, DEVICE)
    assert printer.online is True
    assert printer.last_seen is not None
    seen = printer.last_seen if printer.last_seen.tzinfo else printer.last_seen.replace(tzinfo=UTC)
    assert before <= seen <= datetime.now(UTC)
    quiet = device(city, "quiet")
    assert (quiet.online, quiet.last_seen) == (None, None)


def test_last_seen_moves_forward_only_and_a_reported_status_stands(
    city: sessionmaker[Session],
) -> None:
    add_device(city, "off")
    source = f"/{CITY}/{SITE}/{DEVICE}"
    later = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    with transaction(city) as s:
        entries.mark_heard(s, {source: later, "/nowhere/at/all": later})
        entries.mark_heard(s, {source: later - timedelta(minutes=5)})  # an older batch
        off = s.scalars(select(Device.id).where(Device.slug == "off")).one()
        entries.mark_status(s, {off: (later, False)})  # its will said offline
        entries.mark_heard(s, {f"/{CITY}/{SITE}/off": later + timedelta(seconds=1)})
    printer = device(city, DEVICE)
    assert printer.online is True
    assert printer.last_seen is not None
    assert printer.last_seen.replace(tzinfo=UTC) == later
    went = device(city, "off")
    assert went.online is False  # a message after the will does not undo what it reported
    assert went.last_seen is not None
    assert went.last_seen.replace(tzinfo=UTC) == later + timedelta(seconds=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Message:
    def __init__(self, topic: str, at: datetime) -> None:
        self.topic, self.received_at = topic, at


def test_last_seen_is_written_once_per_device_and_period() -> None:
    clock = Clock()
    heard = Heard("p/v1", every_s=5, clock=clock)
    t0 = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    batch = [
        Message("p/v1/c/s/a/events", t0),
        Message("p/v1/c/s/a/events", t0 + timedelta(seconds=1)),
        Message("p/v1/c/s/b/events", t0),
        Message("p/v1/c/s/events", t0),  # not a device's topic
    ]
    due = heard.due(batch)  # type: ignore[arg-type]
    assert due == {"/c/s/a": t0 + timedelta(seconds=1), "/c/s/b": t0}
    assert heard.due(batch) == due  # type: ignore[arg-type]  # not written yet: still due
    heard.written(due)
    clock.now += 4.9
    assert heard.due(batch) == {}  # type: ignore[arg-type]
    clock.now += 0.1
    assert set(heard.due(batch)) == {"/c/s/a", "/c/s/b"}  # type: ignore[arg-type]
