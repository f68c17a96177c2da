"""`fabcity up`, the embedded default, as a new user runs it: a process fed over MQTT, by
Mosquitto when it is installed, by amqtt otherwise."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from services.mqtt import embedded_broker as embedded_broker_module
from services.mqtt.embedded_broker import (
    BrokerUnavailable,
    EmbeddedBroker,
    Mosquitto,
    embedded_broker,
    find_mosquitto,
)
from tests.conftest import free_port
from tests.support.city import flow
from tests.support.procs import Proc, wait_until


def start_up(data_dir: Path, *extra: str) -> tuple[Proc, int, int]:
    api_port, mqtt_port = free_port(), free_port()
    up = Proc(
        [
            "up",
            "--no-simulate",
            "--api-port",
            str(api_port),
            "--mqtt-port",
            str(mqtt_port),
            "--data-dir",
            str(data_dir),
            *extra,
        ]
    )
    up.wait_for_output("Press Ctrl-C", timeout=60)
    return up, api_port, mqtt_port


def publish_and_read_the_share(
    api_port: int, mqtt_port: int, protocol: MQTTProtocolVersion
) -> None:
    """Register a device, publish 3 kg from the city and 1 kg from beyond over MQTT, and
    wait for the local input share: 3 / (3 + 1) = 0.75."""
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10)
    city = {"slug": "lagos", "name": "Lagos", "country": "NG", "timezone": "Africa/Lagos"}
    assert api.post("/v1/cities", json=city).status_code == 201
    site = {"slug": "fablab", "name": "Fab Lab"}
    assert api.post("/v1/cities/lagos/sites", json=site).status_code == 201
    machine = {"slug": "shredder", "name": "Shredder"}
    assert api.post("/v1/cities/lagos/sites/fablab/devices", json=machine).status_code == 201

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.connect("127.0.0.1", mqtt_port)
    client.loop_start()
    for quantity, ring in ((3.0, "city"), (1.0, "beyond")):
        payload = json.dumps(flow(quantity=quantity, ring=ring)).encode()
        sent = client.publish("fabcity/v1/lagos/fablab/shredder/events", payload, qos=1)
        sent.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()

    def share() -> float | None:
        body = api.get("/v1/cities/lagos/metrics", params={"names": "local_input_share"})
        value: float | None = body.json()["series"][0]["points"][-1]["value"]
        return value

    wait_until(lambda: share() == 0.75, timeout=30)


def connects(port: int, protocol: MQTTProtocolVersion) -> bool:
    """Whether the broker accepts a client of this MQTT version."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    try:
        client.connect("127.0.0.1", port)
        client.loop_start()
        wait_until(lambda: client.is_connected(), timeout=5)
        return True
    except (AssertionError, OSError):
        return False
    finally:
        client.loop_stop()
        client.disconnect()


def test_up_runs_mosquitto_and_the_bridge_speaks_mqtt_5_to_it(tmp_path: Path) -> None:
    assert find_mosquitto(), "mosquitto is installed here (apt-get install mosquitto)"
    up, api_port, mqtt_port = start_up(tmp_path)
    try:
        banner = " ".join(up.output.split())  # as printed, wrapped to the terminal's width
        assert "Mosquitto 2." in banner and "MQTT 5 and 3.1.1" in banner
        publish_and_read_the_share(api_port, mqtt_port, mqtt.MQTTv5)
        log = (tmp_path / "mosquitto" / "mosquitto.log").read_text()
        # Mosquitto logs each client's protocol: p5 is MQTT 5.
        assert "as fabcity-embedded-bridge (p5," in log
        conf = (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
        assert f"listener {mqtt_port} 127.0.0.1\n" in conf
        assert f"persistence_location {tmp_path.resolve()}/mosquitto/\n" in conf
    finally:
        code = up.stop()
    assert code == 0, up.output
    assert "stopped." in up.output
    assert (tmp_path / "fabcity.db").exists()
    # Stopped with SIGTERM, Mosquitto saved what it held in the data directory.
    assert (tmp_path / "mosquitto" / "mosquitto.db").exists()
    assert not connects(mqtt_port, mqtt.MQTTv311)


def test_up_falls_back_to_amqtt_and_says_what_it_cannot_do(tmp_path: Path) -> None:
    up, api_port, mqtt_port = start_up(tmp_path, "--broker", "amqtt")
    try:
        banner = " ".join(up.output.split())  # as printed, wrapped to the terminal's width
        assert "amqtt: MQTT 3.1.1 only (MQTT 5 clients are refused)" in banner
        assert "install mosquitto for MQTT 5" in banner
        publish_and_read_the_share(api_port, mqtt_port, mqtt.MQTTv311)
        # What the banner says: an MQTT 5 client is refused.
        assert not connects(mqtt_port, mqtt.MQTTv5)
    finally:
        code = up.stop()
    assert code == 0, up.output
    assert not (tmp_path / "mosquitto").exists()


def test_mosquitto_does_not_outlive_a_killed_up(tmp_path: Path) -> None:
    """`fabcity up` killed outright (SIGKILL, out of memory) runs no `finally`: the broker,
    a child process, must not stay behind holding the port."""
    up, _, mqtt_port = start_up(tmp_path)
    assert connects(mqtt_port, mqtt.MQTTv5)
    up.popen.send_signal(signal.SIGKILL)
    up.popen.wait(10)
    wait_until(lambda: not connects(mqtt_port, mqtt.MQTTv311), timeout=10)


def test_auto_takes_mosquitto_when_installed_and_amqtt_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(embedded_broker("127.0.0.1", 1, tmp_path), Mosquitto)
    assert isinstance(embedded_broker("127.0.0.1", 1, tmp_path, "amqtt"), EmbeddedBroker)
    # As on a machine without the package: neither on PATH nor in the sbin directories.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(embedded_broker_module, "SBIN_DIRS", ())
    assert find_mosquitto() is None
    assert isinstance(embedded_broker("127.0.0.1", 1, tmp_path), EmbeddedBroker)
    with pytest.raises(BrokerUnavailable, match="apt-get install mosquitto"):
        embedded_broker("127.0.0.1", 1, tmp_path, "mosquitto")


def test_up_names_the_flag_when_a_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = Proc(
            [
                "up",
                "--no-simulate",
                "--api-port",
                str(free_port()),
                "--mqtt-port",
                str(port),
                "--data-dir",
                str(tmp_path),
            ]
        )
        code = up.popen.wait(60)
        up.stop()
    assert code == 2
    assert f"port {port}" in up.output
    assert "--mqtt-port" in up.output
    assert "Traceback" not in up.output


@pytest.mark.parametrize(
    ("name", "unit", "value", "shown"),
    [
        ("fci", "ratio", 0.40512, "0.405"),  # an index, as the dashboard shows it; not 40.5 %
        ("local_input_share", "ratio", 0.379, "37.9%"),
        ("produced_count", "count", 43.0, "43"),  # not "43.00 count"
        ("produced_count", "count", 1699.0, "1,699"),
        ("input_kg", "kg", 228.69085, "228.69 kg"),
        ("waste_kg_per_person", "kg/person", 0.00016, "0.0002 kg/person"),
    ],
)
def test_the_terminal_writes_figures_as_the_dashboard_does(
    name: str, unit: str, value: float, shown: str
) -> None:
    from services.cli.embedded import format_value

    assert format_value(name, unit, value) == shown
