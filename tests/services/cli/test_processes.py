"""`fabcity bridge --processes P`: what each bridge process is started with."""

from __future__ import annotations

from fabcity.core.settings import Settings
from services.cli.processes import bridge_child_env


def test_bridge_processes_beside_each_other_write_with_one_thread_each() -> None:
    """Processes sharing the cores: a second writer each would mostly wait for its
    interpreter's lock (docs/scaling.md). Each process is its own client; the first alone
    reads the device adapters' topics."""
    settings = Settings(mqtt_client_id="bridge", metrics_port=9100)
    first, second = (bridge_child_env(settings, i, {"PATH": "/bin"}) for i in (1, 2))
    assert first["FABCITY_BRIDGE_WRITERS"] == second["FABCITY_BRIDGE_WRITERS"] == "1"
    assert (first["FABCITY_MQTT_CLIENT_ID"], second["FABCITY_MQTT_CLIENT_ID"]) == (
        "bridge-p1",
        "bridge-p2",
    )
    assert "FABCITY_BRIDGE_ADAPTERS" not in first and second["FABCITY_BRIDGE_ADAPTERS"] == "false"
    assert (first["FABCITY_METRICS_PORT"], second["FABCITY_METRICS_PORT"]) == ("9101", "9102")
    assert first["PATH"] == "/bin"


def test_an_operators_writers_reach_every_bridge_process() -> None:
    told = Settings(bridge_writers=3)
    env = bridge_child_env(told, 2, {"FABCITY_BRIDGE_WRITERS": "3"})
    assert env["FABCITY_BRIDGE_WRITERS"] == "3"
