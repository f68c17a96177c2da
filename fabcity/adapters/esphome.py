"""ESPHome: plain-text states on `<prefix>/sensor/<name>/state`, availability on
`<prefix>/status`, units from Home Assistant discovery configs on
`<discovery>/sensor/<node>/<object>/config`.

A state is a bare number; what it means comes from the discovery config of its state topic
(`unit_of_measurement`, `device_class`, abbreviated keys and the `~` base allowed). The
configs are retained, so they arrive as soon as the bridge subscribes, and are remembered
per device. Weights (g, kg) become scale readings (each weighing, or the use a spool scale's
decrease shows: the `scale` setting); energy (Wh, kWh) meter deltas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fabcity.adapters import base
from fabcity.adapters.base import Decoded, Device, Message, Refused
from schemas.devices import ESPHomeSettings

TO_KG = {"g": 0.001, "kg": 1.0}
TO_KWH = {"Wh": 0.001, "kWh": 1.0}


def _node(settings: ESPHomeSettings) -> str:
    return settings.node_id or settings.topic_prefix


def filters(settings: ESPHomeSettings) -> list[str]:
    p = settings.topic_prefix
    return [
        f"{p}/status",
        f"{p}/sensor/+/state",
        f"{settings.discovery_prefix}/sensor/{_node(settings)}/+/config",
    ]


def identity(settings: ESPHomeSettings) -> str:
    return settings.topic_prefix


def _config(message: Message) -> tuple[str, dict[str, Any]] | None:
    """The state topic and what is known of it, from a discovery config (None: deleted)."""
    if not message.payload.strip():
        return None
    config = base.json_object(message)
    tilde = config.get("~", "")
    state_topic = config.get("state_topic", config.get("stat_t"))
    if not isinstance(state_topic, str):
        raise Refused("discovery config without a state topic")
    if isinstance(tilde, str) and tilde:
        if state_topic.startswith("~"):
            state_topic = tilde + state_topic[1:]
        elif state_topic.endswith("~"):
            state_topic = state_topic[:-1] + tilde
    return state_topic, {
        "unit": config.get("unit_of_measurement", config.get("unit_of_meas")),
        "class": config.get("device_class", config.get("dev_cla")),
    }


def decode(message: Message, device: Device, state: Mapping[str, Any]) -> Decoded:
    settings = device.settings
    assert isinstance(settings, ESPHomeSettings)
    topic = message.topic
    new: dict[str, Any] = dict(state)
    if topic == f"{settings.topic_prefix}/status":
        word = message.payload.decode(errors="replace").strip()
        if word not in ("online", "offline"):
            raise Refused(f"unknown status {word!r}; expected online/offline")
        return base.availability(state, word == "online", message)
    if topic.startswith(settings.discovery_prefix + "/") and topic.endswith("/config"):
        sensors = dict(state.get("sensors") or {})
        found = _config(message)
        if found is None:
            # An empty config deletes the entity; which one only the topic says.
            sensors = {k: v for k, v in sensors.items() if v.get("config") != topic}
        else:
            sensors[found[0]] = {**found[1], "config": topic}
        new["sensors"] = sensors
        return Decoded([], new)
    if not (topic.startswith(settings.topic_prefix + "/sensor/") and topic.endswith("/state")):
        return Decoded([], new)
    known = (state.get("sensors") or {}).get(topic)
    if not isinstance(known, dict) or not known.get("unit"):
        raise Refused(
            f"no unit known for {topic!r}: its discovery config on "
            f"{settings.discovery_prefix}/sensor/{_node(settings)}/…/config has not been seen"
        )
    value = base.number(message.payload.decode(errors="replace"))
    if value is None:
        raise Refused(f"state {message.payload[:50]!r} is not a number")
    unit = str(known["unit"])
    # Each sensor remembers its own weight or counter: a node may carry several.
    remembered = new.get(topic)
    mine: dict[str, Any] = remembered if isinstance(remembered, dict) else {}
    if unit in TO_KG:
        event, mine = base.scale_reading(
            mine,
            value * TO_KG[unit],
            message.received_at,
            settings.material,
            settings.direction,
            settings.scale,
        )
    elif unit in TO_KWH and value >= 0:
        event, mine = base.meter_delta(mine, value * TO_KWH[unit], message.received_at)
    else:
        return Decoded([], new)  # temperatures, humidity, …: not counted
    new[topic] = mine
    return Decoded([event] if event else [], new)
