"""A retired device's messages on MQTT are dead-lettered with the reason; its stored events
stay. The real Mosquitto, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import DeadLetter, Event
from fabcity.ingest.service import ingest
from fabcity.registry import changes, entries
from services.mqtt.bridge import Bridge
from tests.conftest import settings_for
from tests.support.city import CITY, DEVICE, SITE, count_rows, event, flow
from tests.support.mqtt import publisher
from tests.support.procs import wait_until
from workers.dispatch import NoDispatch


def test_a_retired_device_is_dead_lettered_with_the_reason(
    db_url: str, city: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    source = f"/{CITY}/{SITE}/{DEVICE}"
    with transaction(city) as s:
        assert ingest(s, [event(flow(), id="before", source=source)]).result.accepted == 1
        c = entries.get_city(s, CITY)
        site = entries.get_site(s, c, SITE)
        device = changes.get_device(s, site, DEVICE)
        assert changes.remove_device(s, c, site, device, "test").outcome == "retired"
    settings = settings_for(db_url)
    bridge = Bridge(settings, city, NoDispatch()).start()
    client = publisher(settings.mqtt_host, settings.mqtt_port)
    topic = f"{settings.mqtt_topic_prefix}/{CITY}/{SITE}/{DEVICE}/events"
    try:
        wait_until(bridge.connected.is_set, 10)
        body = json.dumps(event(flow(), id="after", source=source)).encode()
        client.publish(topic, body, qos=1).wait_for_publish(10)
        wait_until(lambda: count_rows(city, DeadLetter) == 1, 15)
    finally:
        bridge.stop()
        client.loop_stop()
    with transaction(city) as s:
        [reason] = s.scalars(select(DeadLetter.reason))
        assert f"device {DEVICE!r} was retired on" in reason
        assert list(s.scalars(select(Event.event_id))) == ["before"]
