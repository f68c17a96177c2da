"""MQTT clients the benchmark runs as processes of their own, so that none shares a GIL with
what it measures.

    python -m bench.mqtt_tools session PORT CLIENT_ID TOPIC      # a persistent session, subscribed
    python -m bench.mqtt_tools drain PORT CLIENT_ID TOPIC N      # a bare subscriber drains N
    python -m bench.mqtt_tools receive PORT CLIENT_ID TOPIC N    # the bridge's client, no work
    python -m bench.mqtt_tools publish PORT PREFIX CITY N [RATE] [TAG] [spread|now]
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.mqtt.client import Client as BufferedClient
from services.mqtt.client import Publish

SITES = ("lab1", "lab2", "lab3", "lab4")
DEVICE = "printer"
WINDOW = 5000  # the bridge's ReceiveMaximum, given to the bare subscriber too


def client(client_id: str = "") -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def buffered_client(client_id: str) -> BufferedClient:
    return BufferedClient(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
    )


def connect(c: mqtt.Client, port: int, persistent: bool) -> None:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = WINDOW
    if persistent:
        props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, keepalive=60, clean_start=not persistent, properties=props)


def event(i: int, city: str, tag: str, when: str = "spread") -> tuple[str, bytes]:
    """The i-th benchmark event (about 230 bytes): a full CloudEvent with one flow, on one of
    four sites and (`spread`) one of 224 hours of 28 days, so that load dirties many windows,
    or (`now`) at the time it is made, as devices report."""
    site = SITES[i % len(SITES)]
    day = f"2026-02-{1 + i // 7 % 28:02d}"
    at = f"{day}T{10 + i % 8:02d}:{i % 60:02d}:00Z"
    if when == "now":
        at = datetime.now(UTC).isoformat()
    body = {
        "specversion": "1.0",
        "id": f"{tag}-{i}",
        "source": f"/{city}/{site}/{DEVICE}",
        "type": "fabcity.flow",
        "time": at,
        "data": {"action": "consume", "resource": "filament", "quantity": 0.25, "unit": "kg",
                 "ring": "city"},
    }  # fmt: skip
    return site, orjson.dumps(body)


def session(port: int, client_id: str, topic: str) -> None:
    done = threading.Event()
    c = client(client_id)
    c.on_subscribe = lambda *_: done.set()
    connect(c, port, persistent=True)
    c.loop_start()
    c.subscribe(topic, qos=1)
    if not done.wait(10):
        sys.exit("no SUBACK")
    c.disconnect()
    c.loop_stop()


def forget(port: int, client_id: str) -> None:
    """End a persistent session: connect with a clean start and no expiry, then leave."""
    done = threading.Event()
    c = client(client_id)
    c.on_connect = lambda *_: done.set()
    connect(c, port, persistent=False)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def drain(port: int, client_id: str, topic: str, n: int, buffered: bool = False) -> None:
    """A QoS 1 subscriber drains n: bare paho acknowledging each message itself, or
    (`buffered`) the bridge's client with nothing behind it, reading as the bridge reads and
    acknowledging each 1,000 in one write as the bridge does after a commit. Prints seconds
    from the first to the n-th."""
    got = 0
    first = 0.0
    done = threading.Event()
    mids: list[int] = []

    def on_message(c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        nonlocal got, first
        if got == 0:
            first = time.perf_counter()
        got += 1
        if buffered:
            mids.append(m.mid)
            if len(mids) >= 1000 or got >= n:
                c.ack_many(mids)  # type: ignore[attr-defined]
                mids.clear()
        if got >= n:
            done.set()

    def on_run(run: list[Publish], _at: object) -> None:
        # The bridge's reading: plain PUBLISH packets in runs, straight from the buffer.
        nonlocal got, first
        if got == 0:
            first = time.perf_counter()
        for publish in run:
            got += 1
            mids.append(publish[2])
            if len(mids) >= 1000 or got >= n:
                c.ack_many(mids)  # type: ignore[attr-defined]
                mids.clear()
        if got >= n:
            done.set()

    c = buffered_client(client_id) if buffered else client(client_id)
    c.on_message = on_message
    if buffered:
        c.on_publish_fast = on_run  # type: ignore[attr-defined]
    connect(c, port, persistent=True)
    c.subscribe(topic, qos=1)
    c.loop_start()
    if not done.wait(600):
        sys.exit(f"drained only {got} of {n}")
    print(f"{n} {time.perf_counter() - first:.6f}")
    c.disconnect()
    c.loop_stop()


def publish(
    port: int, prefix: str, city: str, n: int, rate: float, tag: str, when: str = "spread"
) -> None:
    """Publish n events at QoS 1 (as fast as the broker takes them, or at `rate` per second).

    One thread publishes and runs the network loop: with paho's loop in a thread of its own,
    publishing from the main thread stalled once for good after 113k of 150k messages (no
    packet left the client, nothing was in flight at the broker)."""
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1

    c = client()
    c.max_inflight_messages_set(1000)
    c.on_publish = on_publish
    connect(c, port, persistent=False)
    started = time.perf_counter()
    for i in range(n):
        site, payload = event(i, city, tag, when)
        c.publish(f"{prefix}/{city}/{site}/{DEVICE}/events", payload, qos=1)
        if i % 50 == 49:
            c.loop(0)
            while i - acked > 20_000:  # keep paho's own queue short
                c.loop(0.01)
            if rate:
                # Paced in steps of 50 messages: at 5,000/s one step every 10 ms.
                ahead = started + (i + 1) / rate - time.perf_counter()
                while ahead > 0:
                    c.loop(ahead)
                    ahead = started + (i + 1) / rate - time.perf_counter()
    deadline = time.monotonic() + 600
    while acked < n:
        if time.monotonic() > deadline:
            sys.exit(f"only {acked} of {n} acknowledged by the broker")
        c.loop(0.1)
    print(f"{n} {time.perf_counter() - started:.6f}")
    c.disconnect()


if __name__ == "__main__":
    cmd, port, *rest = sys.argv[1:]
    if cmd == "session":
        session(int(port), rest[0], rest[1])
    elif cmd == "forget":
        forget(int(port), rest[0])
    elif cmd == "drain":
        drain(int(port), rest[0], rest[1], int(rest[2]))
    elif cmd == "receive":
        drain(int(port), rest[0], rest[1], int(rest[2]), buffered=True)
    elif cmd == "publish":
        rate = float(rest[3]) if len(rest) > 3 else 0.0
        tag = rest[4] if len(rest) > 4 else "e"
        publish(int(port), rest[0], rest[1], int(rest[2]), rate, tag, *rest[5:6])
    else:
        sys.exit(__doc__)
