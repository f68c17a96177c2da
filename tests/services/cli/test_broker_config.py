"""`fabcity broker-config` against a real Mosquitto of our own on a spare port: a device
publishes to its own topics and nowhere else; the bridge reads everything."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.migrations import upgrade
from fabcity.registry import entries, keys
from schemas import api
from tests.support.city import CITY, DEVICE, SITE, register
from tests.support.procs import FABCITY
from tests.support.servers import ROOT, Mosquitto

OTHER_DEVICE = "laser"


class SecuredMosquitto(Mosquitto):
    """Mosquitto with the configuration `fabcity broker-config` wrote."""

    def __init__(self, conf: Path) -> None:
        super().__init__()
        self.conf = conf

    def command(self) -> list[str]:
        conf = self.conf.read_text()
        conf = re.sub(r"^listener .*$", f"listener {self.port} 127.0.0.1", conf, flags=re.M)
        conf = re.sub(
            r"^persistence_location .*$", f"persistence_location {self.dir}/", conf, flags=re.M
        )
        conf = re.sub(r"^log_dest .*$", f"log_dest file {self.dir}/mosquitto.log", conf, flags=re.M)
        if os.geteuid() == 0:
            # Started as root, Mosquitto becomes the `mosquitto` user, which cannot read the
            # test's private temporary directories.
            conf = "user root\n" + conf
        path = self.dir / "mosquitto.conf"
        path.write_text(conf)
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(path)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[SecuredMosquitto, dict[str, tuple[str, str]], str]]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        message = "mosquitto is not installed: apt-get install mosquitto"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    url = f"sqlite:///{tmp_path / 'fabcity.db'}"
    upgrade.upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    register(factory)
    users: dict[str, tuple[str, str]] = {}
    with transaction(factory) as s:
        lab = entries.get_site(s, entries.get_city(s, CITY), SITE)
        entries.create_device(s, lab, api.DeviceIn(slug=OTHER_DEVICE, name="Laser"))
        for device in (DEVICE, OTHER_DEVICE):
            issued = keys.create(s, "device", CITY, SITE, device)
            users[device] = (issued.key.lookup, issued.secret)
        revoked = keys.create(s, "device", CITY, SITE, DEVICE)
        keys.revoke(s, revoked.key.id)
    engine.dispose()
    users["revoked"] = (revoked.key.lookup, revoked.secret)
    out = tmp_path / "broker"
    env = {**os.environ, "FABCITY_DATABASE_URL": url, "FABCITY_MQTT_TOPIC_PREFIX": "fabcity/v1"}
    base = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
    done = subprocess.run(
        [FABCITY, "broker-config", "--out", str(out), "--base", str(base)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    bridge_password = re.search(
        r"^FABCITY_MQTT_PASSWORD=(.+)$", (out / "bridge.env").read_text(), re.M
    )
    assert bridge_password is not None
    server = SecuredMosquitto(out / "mosquitto.conf").start()
    try:
        yield server, users, bridge_password.group(1)
    finally:
        server.close()


def connect(port: int, user: str | None, password: str | None) -> tuple[mqtt.Client, int]:
    """A connected MQTT 5 client and the broker's CONNACK reason code."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user is not None:
        client.username_pw_set(user, password)
    answered: queue.Queue[int] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: answered.put(reason.value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, answered.get(timeout=10)


def test_a_device_publishes_to_its_own_topics_only(
    broker: tuple[SecuredMosquitto, dict[str, tuple[str, str]], str],
) -> None:
    server, users, bridge_password = broker
    bridge, code = connect(server.port, "fabcity-bridge", bridge_password)
    assert code == 0
    received: queue.Queue[str] = queue.Queue()
    subscribed: queue.Queue[object] = queue.Queue()
    bridge.on_message = lambda _c, _u, msg: received.put(msg.topic)
    bridge.on_subscribe = lambda *args: subscribed.put(args)
    bridge.subscribe("$share/ingest/fabcity/v1/+/+/+/events", qos=1)
    subscribed.get(timeout=10)

    printer, code = connect(server.port, *users[DEVICE])
    assert code == 0
    own = f"fabcity/v1/{CITY}/{SITE}/{DEVICE}/events"
    other = f"fabcity/v1/{CITY}/{SITE}/{OTHER_DEVICE}/events"
    printer.publish(other, b"{}", qos=1).wait_for_publish(10)
    printer.publish(own, b"{}", qos=1).wait_for_publish(10)
    # In order on one connection: once its own message is here, the other one had its chance.
    assert received.get(timeout=10) == own
    time.sleep(0.5)
    assert received.empty(), "the broker delivered a message to another device's topic"

    laser, code = connect(server.port, *users[OTHER_DEVICE])
    assert code == 0
    laser.publish(other, b"{}", qos=1).wait_for_publish(10)
    assert received.get(timeout=10) == other

    # No key, a wrong password, a revoked key: refused at CONNECT (135: not authorized,
    # 134: bad user name or password).
    for user, password in ((None, None), (users[DEVICE][0], "wrong"), users["revoked"]):
        client, code = connect(server.port, user, password)
        assert code in (134, 135), (user, code)
        client.loop_stop()
    for c in (bridge, printer, laser):
        c.disconnect()
        c.loop_stop()
