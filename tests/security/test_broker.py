"""The broker, attacked by a device that holds a valid key of its own, on a real Mosquitto with
what `fabcity broker-config` writes: it cannot join the bridges' shared subscription (and so
take a share of every device's messages, which the broker would then drop), it cannot take the
bridge's client id (and erase its queue with a clean start, or push it off the broker), and a
broker killed with SIGKILL loses no more than the autosave bound of deploy/mosquitto/."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.services.cli.test_broker_config import (
    BRIDGE_USER,
    OTHER_DEVICE,
    SecuredMosquitto,
    need_mosquitto,
    secured_broker,
)
from tests.support.city import CITY, DEVICE, SITE
from tests.support.servers import MOSQUITTO_CONF, Mosquitto

SHARE = "$share/ingest/fabcity/v1/+/+/+/events"
NOT_AUTHORIZED = 0x87
Broker = tuple[SecuredMosquitto, dict[str, tuple[str, str]], str]


class Peer:
    """An MQTT 5 client that records what it receives and whether it was disconnected."""

    def __init__(
        self,
        port: int,
        user: str | None,
        password: str | None,
        client_id: str = "",
        clean_start: bool = True,
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.received: queue.Queue[str] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.connacks: queue.Queue[tuple[int, bool]] = queue.Queue()
        self.disconnected = threading.Event()
        self.client.on_connect = lambda _c, _u, flags, reason, _p: self.connacks.put(
            (reason.value, flags.session_present)
        )
        self.client.on_subscribe = lambda _c, _u, _m, reasons, _p: self.subacks.put(
            [r.value for r in reasons]
        )
        self.client.on_message = lambda _c, _u, msg: self.received.put(msg.payload.decode())
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if not clean_start:
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        self.code, self.session_present = self.connacks.get(timeout=10)

    def subscribe(self, topic: str) -> int:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=10)[0]

    def publish(self, topic: str, n: int) -> None:
        infos = [self.client.publish(topic, str(i).encode(), qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(30)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS

    def take(self, n: int, timeout: float = 30, quiet: float | None = None) -> set[str]:
        """Up to n messages; stop early once none came for `quiet` seconds."""
        got: set[str] = set()
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while len(got) < n and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                got.add(self.received.get(timeout=0.2))
                last = time.monotonic()
            if quiet is not None and got and time.monotonic() - last > quiet:
                break
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with secured_broker(tmp_path) as built:
        yield built


def own_topic(device: str) -> str:
    return f"fabcity/v1/{CITY}/{SITE}/{device}/events"


def test_a_device_cannot_join_the_bridges_shared_subscription(broker: Broker) -> None:
    server, users, bridge_password = broker
    bridge = Peer(server.port, BRIDGE_USER, bridge_password, BRIDGE_USER, clean_start=False)
    assert bridge.subscribe(SHARE) == 1
    printer = Peer(server.port, *users[DEVICE])
    assert printer.code == 0
    # The bridges' group, another group, every device's events, everything, the broker's own.
    for topic in (SHARE, "$share/other/fabcity/v1/#", "fabcity/v1/#", "#", "$SYS/#"):
        assert printer.subscribe(topic) == NOT_AUTHORIZED, topic
    # Every event another device sends reaches the bridge: none went to the device's share.
    laser = Peer(server.port, *users[OTHER_DEVICE])
    laser.publish(own_topic(OTHER_DEVICE), 20)
    assert bridge.take(20) == {str(i) for i in range(20)}
    assert printer.received.empty()
    for peer in (bridge, printer, laser):
        peer.close()


def test_a_device_cannot_erase_the_bridges_queue(broker: Broker) -> None:
    server, users, bridge_password = broker
    bridge = Peer(server.port, BRIDGE_USER, bridge_password, BRIDGE_USER, clean_start=False)
    assert bridge.subscribe(SHARE) == 1
    bridge.close()
    laser = Peer(server.port, *users[OTHER_DEVICE])
    laser.publish(own_topic(OTHER_DEVICE), 500)
    # The device logs in with its own key, the bridge's client id and a clean start: on a
    # broker that keeps ids apart from users this discarded the bridge's session.
    thief = Peer(server.port, *users[DEVICE], client_id=BRIDGE_USER, clean_start=True)
    assert thief.code == 0
    thief.close()
    bridge = Peer(server.port, BRIDGE_USER, bridge_password, BRIDGE_USER, clean_start=False)
    assert bridge.session_present
    assert bridge.take(500) == {str(i) for i in range(500)}
    bridge.close()
    laser.close()


def test_a_device_cannot_push_a_running_bridge_off(broker: Broker) -> None:
    server, users, bridge_password = broker
    bridge = Peer(server.port, BRIDGE_USER, bridge_password, BRIDGE_USER, clean_start=False)
    assert bridge.subscribe(SHARE) == 1
    thief = Peer(server.port, *users[DEVICE], client_id=BRIDGE_USER, clean_start=True)
    assert thief.code == 0
    laser = Peer(server.port, *users[OTHER_DEVICE])
    laser.publish(own_topic(OTHER_DEVICE), 20)
    assert bridge.take(20) == {str(i) for i in range(20)}
    assert not bridge.disconnected.is_set(), "the bridge was taken off the broker"
    for peer in (bridge, thief, laser):
        peer.close()


def test_a_bridge_password_is_no_good_for_another_bridge_user(broker: Broker) -> None:
    """Bridge users exist only for the bridges broker-config was asked for."""
    server, _, bridge_password = broker
    other = Peer(server.port, "fabcity-bridge-2", bridge_password)
    assert other.code in (134, 135)
    other.client.loop_stop()


# --- persistence ---------------------------------------------------------------------------------


def autosave_seconds() -> int:
    """How long, at most, the shipped settings leave an acknowledged message unsaved."""
    conf = MOSQUITTO_CONF.read_text()
    on_changes = re.search(r"^autosave_on_changes (\S+)$", conf, re.M)
    interval = re.search(r"^autosave_interval (\d+)$", conf, re.M)
    assert on_changes is None or on_changes.group(1) == "false", "autosave counts changes"
    assert interval is not None
    return int(interval.group(1))


class SavingMosquitto(Mosquitto):
    """The shipped configuration, able to write its database whoever starts it."""

    def command(self) -> list[str]:
        command = super().command()
        if os.geteuid() == 0:
            # Started as root, Mosquitto becomes the `mosquitto` user, which cannot write into
            # the private temporary directory: it would save nothing, silently.
            path = Path(command[-1])
            path.write_text("user root\n" + path.read_text())
        return command


def test_a_broker_sigkill_loses_at_most_the_autosave_bound() -> None:
    """What was queued more than one autosave interval before a SIGKILL survives it (with
    Mosquitto's default of 1800 s, all 5,000 were lost, and the session with them)."""
    need_mosquitto()
    seconds = autosave_seconds()
    queued = 5000
    server = SavingMosquitto().start()
    try:
        bridge = Peer(server.port, None, None, "sigkill-bridge", clean_start=False)
        assert bridge.subscribe(SHARE) == 1
        bridge.close()
        device = Peer(server.port, None, None)
        device.publish(own_topic(DEVICE), queued)  # each acknowledged by the broker
        device.close()
        time.sleep(seconds + 2)  # one autosave interval, and a margin for the save to finish
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        server.proc = None
        server.start()
        bridge = Peer(server.port, None, None, "sigkill-bridge", clean_start=False)
        assert bridge.session_present, "the session itself was lost"
        got = bridge.take(queued, timeout=30, quiet=2)
        bridge.close()
        assert len(got) == queued, f"lost {queued - len(got)} of {queued}"
    finally:
        server.close()
