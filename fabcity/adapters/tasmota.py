"""Tasmota: energy plugs (`ENERGY`) and HX711 load cells (`HX711`) on `tele/<topic>/SENSOR`,
`stat/<topic>/STATUS8` and `STATUS10`; availability on `tele/<topic>/LWT`.

`Time` is the device's local time without an offset (unless `SetOption52 1`): it is read in
the city's time zone. `ENERGY.Total` is a cumulative kWh counter that resets on `EnergyReset`
or a device reset; the adapter turns it into deltas (see `base.meter_delta`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fabcity.adapters import base
from fabcity.adapters.base import Decoded, Device, Emitted, Message, Refused
from schemas.devices import TasmotaSettings

PREFIXES = ("tele", "stat")


def _topic_for(settings: TasmotaSettings, prefix: str) -> str:
    return (
        settings.full_topic.replace("%prefix%", prefix).replace("%topic%", settings.topic)
    ).rstrip("/")


def filters(settings: TasmotaSettings) -> list[str]:
    return [_topic_for(settings, p) + "/#" for p in PREFIXES]


def identity(settings: TasmotaSettings) -> str:
    return settings.full_topic.replace("%topic%", settings.topic)


def _split(topic: str, settings: TasmotaSettings) -> tuple[str, str]:
    pattern = (
        re.escape(settings.full_topic.rstrip("/"))
        .replace(re.escape("%prefix%"), "(?P<prefix>tele|stat)")
        .replace(re.escape("%topic%"), re.escape(settings.topic))
    )
    match = re.fullmatch(pattern + "/(?P<command>.+)", topic)
    if match is None:
        raise Refused(f"topic {topic!r} does not fit FullTopic {settings.full_topic!r}")
    return match["prefix"], match["command"]


def decode(message: Message, device: Device, state: Mapping[str, Any]) -> Decoded:
    settings = device.settings
    assert isinstance(settings, TasmotaSettings)
    prefix, command = _split(message.topic, settings)
    if (prefix, command) == ("tele", "LWT"):
        word = message.payload.decode(errors="replace").strip()
        if word not in ("Online", "Offline"):
            raise Refused(f"unknown LWT {word!r}; expected Online/Offline")
        return base.availability(state, word == "Online", message)
    if (prefix, command) not in (("tele", "SENSOR"), ("stat", "STATUS8"), ("stat", "STATUS10")):
        return Decoded([], dict(state))
    body = base.json_object(message)
    sensors = body.get("StatusSNS", body)
    if not isinstance(sensors, dict):
        raise Refused("StatusSNS is not an object")
    when = base.local_time(sensors.get("Time"), device.timezone) or message.received_at
    events: list[Emitted] = []
    new: dict[str, Any] = dict(state)
    energy = sensors.get("ENERGY")
    if isinstance(energy, dict):
        total = energy.get("Total")
        # Multi-channel meters send one counter per channel.
        values = total if isinstance(total, list) else [total]
        numbers = [base.number(v) for v in values]
        if numbers and all(n is not None and n >= 0 for n in numbers):
            event, new = base.meter_delta(new, sum(n for n in numbers if n is not None), when)
            events.extend([event] if event else [])
    scale = sensors.get("HX711")
    if isinstance(scale, dict):
        weight = base.number(scale.get("Weight"))  # kg
        if weight is not None:
            event, new = base.scale_reading(
                new, weight, when, settings.material, settings.direction, settings.scale
            )
            events.extend([event] if event else [])
    return Decoded(events, new)
