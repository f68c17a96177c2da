"""`fabcity up`, the embedded default, as a new user runs it: a process fed over MQTT."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import free_port
from tests.support.city import flow
from tests.support.procs import Proc, wait_until


def test_up_answers_with_the_metric_of_what_was_published(tmp_path: Path) -> None:
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
            str(tmp_path),
        ]
    )
    try:
        up.wait_for_output("Press Ctrl-C", timeout=60)
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10)
        assert (
            api.post(
                "/v1/cities",
                json={
                    "slug": "lagos",
                    "name": "Lagos",
                    "country": "NG",
                    "timezone": "Africa/Lagos",
                },
            ).status_code
            == 201
        )
        assert (
            api.post(
                "/v1/cities/lagos/sites", json={"slug": "fablab", "name": "Fab Lab"}
            ).status_code
            == 201
        )
        assert (
            api.post(
                "/v1/cities/lagos/sites/fablab/devices",
                json={"slug": "shredder", "name": "Shredder"},
            ).status_code
            == 201
        )

        # The embedded broker (amqtt) speaks MQTT 3.1.1 only.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.connect("127.0.0.1", mqtt_port)
        client.loop_start()
        for quantity, ring in ((3.0, "city"), (1.0, "beyond")):
            payload = json.dumps(flow(quantity=quantity, ring=ring)).encode()
            sent = client.publish("fabcity/v1/lagos/fablab/shredder/events", payload, qos=1)
            sent.wait_for_publish(10)
        client.loop_stop()

        def share() -> float | None:
            body = api.get("/v1/cities/lagos/metrics", params={"names": "local_input_share"})
            value: float | None = body.json()["series"][0]["points"][-1]["value"]
            return value

        wait_until(lambda: share() is not None and share() == 0.75, timeout=30)
    finally:
        code = up.stop()
    assert code == 0, up.output
    assert "stopped." in up.output
    assert (tmp_path / "fabcity.db").exists()


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
