"""The bridge's MQTT client: buffered reads, the fast PUBLISH decoder and batched PUBACKs,
checked against a socket pair and the real Mosquitto."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.client import MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
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


def _session(
    client_id: str, messages: list[mqtt.MQTTMessage], clean: bool, fast: bool = False
) -> Client:
    client = Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
    )
    client.on_message = lambda _c, _u, m: messages.append(m)
    if fast:
        client.on_publish_fast = lambda run, _at: messages.extend(_as_message(*p) for p in run)
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


def _as_message(topic: str, payload: bytes, mid: int, qos: int, dup: bool) -> mqtt.MQTTMessage:
    """What `on_publish_fast` was given, as paho's message, to compare the two paths."""
    message = MQTTMessage(mid=mid, topic=topic.encode())
    message.payload, message.qos, message.dup = payload, qos, dup
    return message


@pytest.mark.parametrize("fast", [False, True], ids=["paho-reader", "buffer-reader"])
def test_messages_arrive_whole_and_a_batch_ack_settles_them(
    mosquitto: tuple[str, int], fast: bool
) -> None:
    topic = f"fabcity-test-{uuid.uuid4().hex[:8]}/client"
    client_id = f"fabcity-test-client-{uuid.uuid4().hex[:8]}"
    received: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    sub = _session(client_id, received, clean=True, fast=fast)
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
    sub = _session(client_id, again, clean=False, fast=fast)
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


# The buffer reader, packet by packet ---------------------------------------------------------


def _length(n: int) -> bytes:
    """An MQTT remaining length: seven bits a byte, low first."""
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish(
    topic: bytes,
    payload: bytes,
    mid: int = 1,
    qos: int = 1,
    props: bytes = b"\x00",
    v5: bool = True,
) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    body += mid.to_bytes(2, "big") if qos else b""
    body += (props if v5 else b"") + payload
    return bytes([0x30 | qos << 1]) + _length(len(body)) + body


class _Fake:
    """A socket that hands out a byte string in reads of at most `chunk` bytes."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.chunk, self.pos = data, chunk, 0

    def recv(self, size: int) -> bytes:
        if self.pos >= len(self.data):
            raise BlockingIOError
        part = self.data[self.pos : self.pos + min(size, self.chunk)]
        self.pos += len(part)
        return part

    def send(self, data: bytes) -> int:
        return len(data)

    def fileno(self) -> int:
        return -1

    def setblocking(self, _flag: bool) -> None:
        pass

    def close(self) -> None:
        pass


def _read_all(data: bytes, chunk: int, protocol: int = mqtt.MQTTv5) -> tuple[list[Any], Any]:
    """Feed `data` to a connected client; (what each path got, in order: ("fast"|"paho", topic,
    payload, mid, qos, dup), the last return code)."""
    got: list[Any] = []
    client = Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol, manual_ack=True)

    def on_message(_c: Any, _u: Any, m: MQTTMessage) -> None:
        try:
            topic: str | None = m.topic
        except UnicodeDecodeError:
            topic = None  # what paho's message says of a topic that is not UTF-8
        got.append(("paho", topic, m.payload, m.mid, m.qos, m.dup))

    client.on_message = on_message
    client.on_publish_fast = lambda run, _at: got.extend(("fast", *p) for p in run)
    fake = _Fake(data, chunk)
    client._sock = BufferedSocket(fake)  # type: ignore[assignment]
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    rc = MQTTErrorCode.MQTT_ERR_SUCCESS
    while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (
        fake.pos < len(data) or client._sock.pending()  # type: ignore[union-attr]
    ):
        try:
            rc = client.loop_read()
        except BlockingIOError:
            break
    return got, rc


@pytest.mark.parametrize("chunk", [7, 300, 1 << 20], ids=["tiny-reads", "cut-reads", "one-read"])
def test_the_buffer_reader_takes_plain_publishes_and_leaves_the_rest_to_paho(chunk: int) -> None:
    big = b"x" * 20_000  # a remaining length of three bytes
    user_property = b"\x07\x26\x00\x01k\x00\x01v"  # properties: one user property k=v
    packets = [
        (_publish(b"a/1", b"one", mid=1), ("fast", "a/1", b"one", 1, 1, False)),
        (_publish(b"a/2", big, mid=2), ("fast", "a/2", big, 2, 1, False)),
        (_publish(b"a/3", b"p", mid=3, props=user_property), ("paho", "a/3", b"p", 3, 1, False)),
        (_publish(b"a/4", b"q0", qos=0), ("fast", "a/4", b"q0", 0, 0, False)),
        (b"\xd0\x00", None),  # PINGRESP, paho's
        # QoS 2: paho's, which delivers it once the PUBREL comes.
        (_publish(b"a/5", b"two", qos=2, mid=5), None),
        (bytes([0x3A]) + _publish(b"a/6", b"dup", mid=6)[1:], ("fast", "a/6", b"dup", 6, 1, True)),
        (_publish(b"\xff/7", b"bad topic", mid=7), ("paho", None, b"bad topic", 7, 1, False)),
        (_publish(b"a/8", b"", mid=8), ("fast", "a/8", b"", 8, 1, False)),
    ]
    got, rc = _read_all(b"".join(p for p, _ in packets), chunk)

    assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS
    expected = [e for _, e in packets if e is not None]
    # Whichever reads the socket gives, the same messages in the same order.
    assert [g[1:] for g in got] == [e[1:] for e in expected]
    if chunk == 1 << 20:
        # All in the buffer at once: each plain PUBLISH is the buffer reader's, the rest paho's.
        assert got == expected
    if chunk == 7:
        # Reads of 7 bytes never hold a whole packet: paho reads them all.
        assert {g[0] for g in got} == {"paho"}


def test_a_plain_publish_on_mqtt_3_has_no_property_length() -> None:
    data = _publish(b"b/1", b"x", mid=9, v5=False) + _publish(b"b/2", b"y", qos=0, v5=False)
    got, _ = _read_all(data, 1 << 20, protocol=mqtt.MQTTv311)
    assert got == [("fast", "b/1", b"x", 9, 1, False), ("fast", "b/2", b"y", 0, 0, False)]


def test_a_malformed_publish_is_left_to_paho_which_refuses_it() -> None:
    good = _publish(b"c/1", b"ok", mid=1)
    # The topic's length runs past the packet's end.
    bad = bytes([0x32, 4]) + (200).to_bytes(2, "big") + b"c/"
    got, rc = _read_all(good + bad + good, 1 << 20)
    # The reader stops at it; paho refuses it (and disconnects), and reads nothing after it.
    assert got == [("fast", "c/1", b"ok", 1, 1, False)]
    assert rc == MQTTErrorCode.MQTT_ERR_PROTOCOL
