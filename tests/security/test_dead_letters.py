"""Dead letters cannot fill the disk: a flood of refused payloads, and retained messages
delivered again at every restart, against the real bridge, Mosquitto and the databases."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter
from fabcity.core.settings import Settings
from fabcity.ingest.replay import replay
from services.http.app import create_app
from services.mqtt.bridge import Bridge
from tests.conftest import settings_for
from tests.support.mqtt import publisher
from tests.support.procs import wait_until
from workers.dispatch import NoDispatch

FLOOD_MESSAGES = 100
FLOOD_PAYLOAD_BYTES = 900_000  # under the broker's limit, far over the bridge's
BRIDGE_RESTARTS = 2


@pytest.fixture
def pg_bare(pg_url: str) -> Iterator[sessionmaker[Session]]:
    """A database with no city registered: every message is refused."""
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("fabcity_dead_letters_total", {"outcome": outcome})
    return value or 0.0


def letters(factory: sessionmaker[Session]) -> list[DeadLetter]:
    with transaction(factory) as s:
        found = list(s.scalars(select(DeadLetter).order_by(DeadLetter.id)))
        s.expunge_all()
    return found


def stored_payload_bytes(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as s:
        return s.scalar(select(func.coalesce(func.sum(func.length(DeadLetter.payload)), 0))) or 0


def run_bridge_until(settings: Settings, factory: sessionmaker[Session], refused: int) -> None:
    """Start a bridge, wait until it has refused `refused` messages, stop it."""
    bridge = Bridge(settings, factory, NoDispatch()).start()
    try:
        wait_until(bridge.connected.is_set, 10)
        wait_until(lambda: bridge.dead_lettered + bridge.adapters.dead_lettered >= refused, 30)
    finally:
        bridge.stop()


def test_a_device_flooding_malformed_payloads_stores_a_bounded_number_of_bytes(
    pg_url: str, pg_bare: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    # The default settings: what a deployment gets without tuning anything.
    settings = settings_for(pg_url, mqtt_adapter_topics=[])
    topic = f"{settings.mqtt_topic_prefix}/flood-city/lab/printer/events"
    payloads = [
        i.to_bytes(4, "big") + b"{not json" * (FLOOD_PAYLOAD_BYTES // 9)
        for i in range(FLOOD_MESSAGES)
    ]
    over_before = counted("over_device_quota")
    bridge = Bridge(settings, pg_bare, NoDispatch()).start()
    client = publisher(settings.mqtt_host, settings.mqtt_port)
    try:
        wait_until(bridge.connected.is_set, 10)
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(30)
        # Every one of them was handled (and so acknowledged), kept or not.
        wait_until(lambda: bridge.dead_lettered == FLOOD_MESSAGES, 60)
    finally:
        bridge.stop()
        client.loop_stop()
        client.disconnect()

    received = sum(len(p) for p in payloads)
    kept = letters(pg_bare)
    stored = stored_payload_bytes(pg_bare)
    # Before the bound, every byte was stored: 90 MB from one device in seconds.
    assert stored < received / 10, f"{stored} of {received} bytes stored"
    assert stored <= settings.dead_letter_bytes_per_device
    assert 0 < len(kept) <= settings.dead_letters_per_device
    # What is kept says what was received: its size and hash, and why it was refused.
    by_hash = {hashlib.sha256(p).hexdigest(): p for p in payloads}
    for letter in kept:
        whole = by_hash[letter.payload_sha256]
        assert letter.payload_size == len(whole)
        assert letter.payload == whole[: settings.dead_letter_payload_bytes]
        assert letter.truncated
        assert "at most" in letter.reason
    # What was not kept is counted, with a label that does not name the sender.
    assert counted("over_device_quota") - over_before == FLOOD_MESSAGES - len(kept)

    # The operators' view says what was received, not only what was kept.
    with TestClient(create_app(settings, "both", factory=pg_bare, dispatcher=NoDispatch())) as c:
        listed = c.get("/v1/dead-letters", params={"limit": 1}).json()[0]
        shown = c.get(f"/v1/dead-letters/{listed['id']}").json()
    assert (listed["size"], listed["kept"], listed["truncated"]) == (
        len(by_hash[listed["sha256"]]),
        settings.dead_letter_payload_bytes,
        True,
    )
    assert len(base64.b64decode(shown["payload_base64"])) == settings.dead_letter_payload_bytes

    # A letter cut short is not replayed: its first bytes are not what the device sent.
    with transaction(pg_bare) as s:
        done = replay(s, [kept[0].id], settings.mqtt_topic_prefix)
    assert (done.ingested, done.still_dead, done.cut) == (0, 1, 1)
    after = letters(pg_bare)[0]
    assert "cannot be replayed" in (after.last_replay_outcome or "")
    assert "at most" in after.reason  # why it was refused stays as it was


def retained_bad_message(settings: Settings, topic: str, payload: bytes) -> None:
    client = publisher(settings.mqtt_host, settings.mqtt_port)
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def clear_retained(settings: Settings, topic: str) -> None:
    retained_bad_message(settings, topic, b"")  # an empty retained message deletes it


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_retained_bad_message_is_dead_lettered_once_across_restarts(
    db_url: str, mosquitto: tuple[str, int], protocol: str
) -> None:
    # MQTT 3.1.1, as the embedded broker speaks: the native topics are a plain subscription,
    # and the broker sends retained messages again at every subscribe. On MQTT 5 the native
    # subscription is shared (which gets no retained messages) but the device topics are not.
    tag = uuid.uuid4().hex[:8]
    settings = settings_for(
        db_url, mqtt_protocol=protocol, mqtt_adapter_topics=[f"retained-{tag}/tele/#"]
    )
    native = f"{settings.mqtt_topic_prefix}/city/lab/meter/events"
    device = f"retained-{tag}/tele/meter/SENSOR"
    topics = [device] if protocol == "5" else [native, device]
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    repeats_before = counted("repeat")
    try:
        for topic in topics:
            retained_bad_message(settings, topic, b"{retained and not json")
        for _ in range(1 + BRIDGE_RESTARTS):
            # Each bridge (the same client id, as after a restart) gets them again.
            run_bridge_until(settings, factory, len(topics))
        assert sorted(letter.topic or "" for letter in letters(factory)) == sorted(topics)
        assert counted("repeat") - repeats_before == BRIDGE_RESTARTS * len(topics)
    finally:
        for topic in topics:
            clear_retained(settings, topic)
        engine.dispose()
