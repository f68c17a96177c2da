"""An event dated past the future skew, published on MQTT, is dead-lettered with the reason;
one within the skew is stored. The real Mosquitto, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import DeadLetter, Event
from services.mqtt.bridge import Bridge
from tests.conftest import settings_for
from tests.support.city import CITY, DEVICE, SITE, count_rows, event, flow
from tests.support.mqtt import publisher
from tests.support.procs import wait_until
from workers.dispatch import NoDispatch


def test_a_future_event_is_dead_lettered_with_its_reason(
    db_url: str, city: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    settings = settings_for(db_url)
    bridge = Bridge(settings, city, NoDispatch()).start()
    client = publisher(settings.mqtt_host, settings.mqtt_port)
    topic = f"{settings.mqtt_topic_prefix}/{CITY}/{SITE}/{DEVICE}/events"
    source = f"/{CITY}/{SITE}/{DEVICE}"
    now = datetime.now(UTC)
    try:
        wait_until(bridge.connected.is_set, 10)
        for id, when in (("in-2030", "2030-01-01T00:00:00Z"),
                         ("two-days", (now + timedelta(days=2)).isoformat()),
                         ("an-hour", (now + timedelta(hours=1)).isoformat())):  # fmt: skip
            body = json.dumps(event(flow(), id=id, source=source, time=when)).encode()
            client.publish(topic, body, qos=1).wait_for_publish(10)
        wait_until(lambda: count_rows(city, DeadLetter) == 2 and count_rows(city, Event) == 1, 15)
    finally:
        bridge.stop()
        client.loop_stop()
    with transaction(city) as s:
        letters = {json.loads(p)["id"]: r for p, r in s.execute(
            select(DeadLetter.payload, DeadLetter.reason))}  # fmt: skip
        assert set(s.scalars(select(Event.event_id))) == {"an-hour"}
    assert set(letters) == {"in-2030", "two-days"}
    assert all("ahead of when the event was received" in r for r in letters.values())
    assert "2030-01-01" in letters["in-2030"]
