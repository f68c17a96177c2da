"""`fabcity broker-config` against a real Mosquitto of our own on a spare port: a device
publishes to its own topics and nowhere else; the bridge reads everything.

The secured broker built here serves tests/security/test_broker.py as well."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.settings import Settings
from fabcity.migrations import upgrade
from fabcity.registry import entries, keys
from schemas import api
from tests.support.city import CITY, DEVICE, SITE, register
from tests.support.procs import FABCITY
from tests.support.servers import ROOT, Mosquitto

OTHER_DEVICE = "laser"
BRIDGE_USER = "fabcity-bridge-1"
# Debian's package puts the plugin under /usr/lib/<triplet>/, the eclipse-mosquitto image in
# /usr/lib/.
DYNSEC_PLUGIN = next(
    (str(p) for p in sorted(Path("/usr/lib").glob("**/mosquitto_dynamic_security.so"))), None
)


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


def need_mosquitto() -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        message = "mosquitto is not installed: apt-get install mosquitto"
    elif DYNSEC_PLUGIN is None:
        message = "mosquitto_dynamic_security.so is not installed: apt-get install mosquitto"
    else:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def secured_broker(
    tmp_path: Path, *extra: str
) -> Iterator[tuple[SecuredMosquitto, dict[str, tuple[str, str]], str]]:
    """A Mosquitto with what `fabcity broker-config` (and `extra` options) wrote for two device
    keys and a revoked one; the users' (key, secret) by device, and the bridge's password."""
    need_mosquitto()
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
    assert DYNSEC_PLUGIN is not None
    done = subprocess.run(
        [FABCITY, "broker-config", "--out", str(out), "--base", str(base),
         "--plugin", DYNSEC_PLUGIN, *extra],
        env=env,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    bridge_password = (out / "bridge-1" / "fabcity_mqtt_password").read_text()
    server = SecuredMosquitto(out / "mosquitto.conf")
    server.start()
    try:
        yield server, users, bridge_password
    finally:
        server.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[SecuredMosquitto, dict[str, tuple[str, str]], str]]:
    with secured_broker(tmp_path) as built:
        yield built


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
    bridge, code = connect(server.port, BRIDGE_USER, bridge_password)
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


def compose_healthcheck(out: Path, port: int) -> str:
    """docker-compose.yml's healthcheck for the broker, as its shell would run it here."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    writer = compose["services"]["broker-config"]["command"]
    inside = writer[writer.index("--out") + 1]
    command: str = test[1].replace("$$", "$").replace(inside, str(out))
    return command.replace("-p 1883", f"-p {port}")


def test_the_compose_healthcheck_logs_in(
    broker: tuple[SecuredMosquitto, dict[str, tuple[str, str]], str],
) -> None:
    server, _, _ = broker
    out = server.conf.parent
    command = compose_healthcheck(out, server.port)
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # The same without the password: the broker refuses it, so the check is not a formality.
    anonymous = re.sub(r'-u \S+\s+-P "[^"]*"', "", command)
    assert "-u" not in anonymous
    done = subprocess.run(["sh", "-c", anonymous], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0


def test_the_bridge_reads_its_credentials_from_files(
    broker: tuple[SecuredMosquitto, dict[str, tuple[str, str]], str],
) -> None:
    server, _, _ = broker
    secrets_dir = server.conf.parent / "bridge-1"
    settings = Settings(_secrets_dir=secrets_dir)  # what FABCITY_SECRETS_DIR does
    assert settings.mqtt_username == BRIDGE_USER
    assert settings.mqtt_client_id == BRIDGE_USER
    assert settings.mqtt_password
    client, code = connect(server.port, settings.mqtt_username, settings.mqtt_password)
    assert code == 0
    client.disconnect()
    client.loop_stop()
    assert (secrets_dir / "fabcity_mqtt_password").stat().st_mode & 0o077 == 0


def test_bridges_and_processes_get_users_of_their_own(tmp_path: Path) -> None:
    with secured_broker(tmp_path, "--bridges", "2", "--processes", "2") as (server, _, first):
        out = server.conf.parent
        second = (out / "bridge-2" / "fabcity_mqtt_password").read_text()
        assert second != first
        for user, password in (
            ("fabcity-bridge-1-p1", first),
            ("fabcity-bridge-1-p2", first),
            ("fabcity-bridge-2", second),
            ("fabcity-bridge-2-p2", second),
        ):
            client, code = connect(server.port, user, password)
            assert code == 0, user
            client.disconnect()
            client.loop_stop()
        client, code = connect(server.port, "fabcity-bridge-2", first)
        assert code in (134, 135)
        client.loop_stop()
        # A second run keeps the passwords: running bridges keep working.
        config = json.loads((out / "dynamic-security.json").read_text())
        env = {**os.environ, "FABCITY_DATABASE_URL": f"sqlite:///{tmp_path / 'fabcity.db'}"}
        assert DYNSEC_PLUGIN is not None
        subprocess.run(
            [FABCITY, "broker-config", "--out", str(out), "--plugin", DYNSEC_PLUGIN,
             "--bridges", "2"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        assert (out / "bridge-1" / "fabcity_mqtt_password").read_text() == first
        again = json.loads((out / "dynamic-security.json").read_text())
        users = {c["username"] for c in again["clients"]}
        assert users == {c["username"] for c in config["clients"]} - {
            "fabcity-bridge-1-p1", "fabcity-bridge-1-p2", "fabcity-bridge-2-p1",
            "fabcity-bridge-2-p2",
        }  # fmt: skip
