"""Which registered device a topic belongs to, and which adapter reads it. Pure: the caller
loads the devices (`registry.adapter_devices`) and runs the adapters (`intake`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from fabcity.adapters import (
    bambu,
    cloudevents,
    esphome,
    moonraker,
    octoprint,
    prusalink,
    shelly,
    sparkplug,
    tasmota,
)
from fabcity.adapters.base import Adapter, Device


@dataclass(frozen=True)
class Spec:
    decode: Adapter
    # Topic filters the device's messages arrive on. PrusaLink's poller and the Bambu
    # printer clients name their messages with topics of the same form.
    filters: Callable[[Any], list[str]]
    # What two devices of the adapter must not share, or one message would count twice.
    identity: Callable[[Any], str]


ADAPTERS: dict[str, Spec] = {
    "octoprint": Spec(octoprint.decode, octoprint.filters, octoprint.identity),
    "moonraker": Spec(moonraker.decode, moonraker.filters, moonraker.identity),
    "bambu": Spec(bambu.decode, bambu.filters, bambu.identity),
    "tasmota": Spec(tasmota.decode, tasmota.filters, tasmota.identity),
    "shelly": Spec(shelly.decode, shelly.filters, shelly.identity),
    "esphome": Spec(esphome.decode, esphome.filters, esphome.identity),
    "sparkplug": Spec(sparkplug.decode, sparkplug.filters, sparkplug.identity),
    "cloudevents": Spec(cloudevents.decode, cloudevents.filters, cloudevents.identity),
    "prusalink": Spec(prusalink.decode, prusalink.filters, prusalink.identity),
}


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (`+` one level, `#` the rest); `$` topics need a `$` filter."""
    if topic.startswith("$") != topic_filter.startswith("$"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels) or (level != "+" and level != topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)


def not_from_devices(topic: str) -> bool:
    """Whether a topic the bridge reads carries no device's message (a Sparkplug host
    application's STATE): left alone, neither an event nor a refusal."""
    return sparkplug.host_state(topic)


def device_filters(device: Device) -> list[str]:
    spec = ADAPTERS.get(device.adapter)
    return spec.filters(device.settings) if spec else []


class Router:
    """Topic to devices. Filters are indexed by their first two levels where those are
    literal (`tele/<topic>/#`, `spBv1.0/<group>/...`), else by the first; the few filters
    that start with a wildcard are scanned."""

    def __init__(self, devices: Iterable[Device]) -> None:
        self.devices = list(devices)
        self._by_two: dict[tuple[str, str], list[tuple[str, Device]]] = {}
        self._by_root: dict[str, list[tuple[str, Device]]] = {}
        self._wild: list[tuple[str, Device]] = []
        for device in self.devices:
            for topic_filter in device_filters(device):
                levels = topic_filter.split("/")
                entry = (topic_filter, device)
                if levels[0] in ("+", "#"):
                    self._wild.append(entry)
                elif len(levels) > 1 and levels[1] not in ("+", "#"):
                    self._by_two.setdefault((levels[0], levels[1]), []).append(entry)
                else:
                    self._by_root.setdefault(levels[0], []).append(entry)

    def devices_for(self, topic: str) -> list[Device]:
        levels = topic.split("/", 2)
        second = levels[1] if len(levels) > 1 else ""
        candidates = [
            *self._by_two.get((levels[0], second), ()),
            *self._by_root.get(levels[0], ()),
            *self._wild,
        ]
        found: list[Device] = []
        for topic_filter, device in candidates:
            if all(d.id != device.id for d in found) and topic_matches(topic_filter, topic):
                found.append(device)
        return found


def subscriptions(devices: Iterable[Device]) -> list[str]:
    """What the bridge subscribes to on the city's broker for these devices.

    Not PrusaLink (polled over HTTP) nor a Bambu printer with a `host` (the bridge connects
    to the printer's own broker); a Bambu printer without one is expected to be bridged into
    the city's broker.
    """
    out: set[str] = set()
    for device in devices:
        if device.adapter == "prusalink":
            continue
        if device.adapter == "bambu" and getattr(device.settings, "host", None):
            continue
        out.update(device_filters(device))
    return sorted(out)


def settings_identity(adapter: str, settings: BaseModel) -> str | None:
    spec = ADAPTERS.get(adapter)
    return spec.identity(settings) if spec else None


def covers(wide: str, narrow: str) -> bool:
    """Whether every topic `narrow` matches is matched by `wide` too."""
    wide_levels, narrow_levels = wide.split("/"), narrow.split("/")
    for i, level in enumerate(wide_levels):
        if level == "#":
            return True
        if i >= len(narrow_levels):
            return False
        other = narrow_levels[i]
        if level == "+" and other != "#":
            continue
        if level != other:
            return False
    return len(wide_levels) == len(narrow_levels)


def minimal_filters(filters: Iterable[str]) -> list[str]:
    """The filters without those another one covers: overlapping subscriptions would make
    the broker deliver a message once per matching subscription."""
    unique = sorted(set(filters))
    return [f for f in unique if not any(o != f and covers(o, f) for o in unique)]
