"""The bridge's MQTT client: buffered reads, the fast PUBLISH decoder and batched PUBACKs,
checked against a socket pair and the real Mosquitto."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.mqtt.client import BufferedSocket, Client
from tests.conftest import MQTT_HOST, MQTT_PORT


def test_buffered_socket_serves_small_reads_from_one_large_read() -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    sock = BufferedSocket(left)
    with pytest.raises(BlockingIOError):
        sock.recv(1)  # nothing sent yet: as a bare non-blocking socket
    right.sendall(b"\x30\x05hello-and-more")
    assert sock.recv(1) == b"\x30"
    assert sock.pending() == len(b"\x05hello-and-more")
    assert sock.recv(1) == b"\x05"
    assert sock.recv(5) == b"hello"
    assert sock.recv(100) == b"-and-more"  # what is left, not more
    assert sock.pending() == 0
    right.close()
    assert sock.recv(1) == b""  # the peer closed: paho reads a lost connection
    sock.close()


def _session(client_id: str, messages: list[mqtt.MQTTMessage], clean: bool) -> Client:
    client = Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
    )
    client.on_message = lambda _c, _u, m: messages.append(m)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 300
    props.ReceiveMaximum = 1000  # hold all 300 unacknowledged (the broker's default is 20)
    client.connect(MQTT_HOST, MQTT_PORT, clean_start=clean, properties=props)
    return client


def _wait(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_messages_arrive_whole_and_a_batch_ack_settles_them(mosquitto: tuple[str, int]) -> None:
    topic = f"fabcity-test-{uuid.uuid4().hex[:8]}/client"
    client_id = f"fabcity-test-client-{uuid.uuid4().hex[:8]}"
    received: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    sub = _session(client_id, received, clean=True)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.loop_start()
    sub.subscribe(topic, qos=1)
    assert subscribed.wait(10)

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(MQTT_HOST, MQTT_PORT)
    pub.loop_start()
    with_props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    with_props.UserProperty = [("ce_id", "x-1")]
    # Sizes from 9 bytes to about 3 KiB: packets that straddle the 256 KiB reads and not.
    sent = [f"payload-{i}".encode() * (i + 1) for i in range(300)]
    for i, body in enumerate(sent):
        props = with_props if i == 7 else None
        pub.publish(topic, body, qos=1, properties=props).wait_for_publish(10)
    _wait(lambda: len(received) == len(sent))

    assert [m.payload for m in received] == sent
    assert {m.topic for m in received} == {topic}
    assert all(m.qos == 1 and m.mid > 0 for m in received)
    # Plain messages skip paho's Properties; the one with properties still has them.
    assert received[0].properties is None
    assert received[7].properties is not None
    assert received[7].properties.UserProperty == [("ce_id", "x-1")]

    # Acknowledge all but the last ten, in one write; leave; come back to the same session.
    sub.ack_many(m.mid for m in received[:-10])
    time.sleep(0.5)
    sub.disconnect()
    sub.loop_stop()
    again: list[mqtt.MQTTMessage] = []
    sub = _session(client_id, again, clean=False)
    sub.loop_start()
    _wait(lambda: len(again) >= 10)
    time.sleep(0.5)
    # Only the unacknowledged ten come back, as redeliveries.
    assert sorted(m.payload for m in again) == sorted(sent[-10:])
    assert all(m.dup for m in again)
    sub.ack_many(m.mid for m in again)
    sub.disconnect()
    sub.loop_stop()
    pub.disconnect()
    pub.loop_stop()
