"""Settings of each device adapter: which topic or address a device sits behind, and what the
platform must know that the device does not say (loaded material, filament, meter type).

A device's `settings` JSON is validated against the model of its `adapter` when it is
registered. Only the keys given are stored; defaults apply when the settings are read, so a
default that changes later reaches devices registered before.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.events import Fate, Ring

# What no topic a device is registered with may hold: the wildcards (`#` and `+`, which would
# let its broker rules cover other devices' topics), and control characters (NUL, and the
# newlines that wrote lines of their own into the broker's access rules). Nor may one start
# with `$`, which names the broker's own topics (`$SYS`, `$share`, `$CONTROL`).
_NOT_IN_TOPICS = r"#+\x00-\x1f\x7f-\x9f\u2028\u2029"
# An MQTT topic level or prefix: no wildcards, no empty levels at the ends.
TopicPrefix = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=rf"^[^/${_NOT_IN_TOPICS}](?:[^{_NOT_IN_TOPICS}]*[^/{_NOT_IN_TOPICS}])?$",
    ),
]
TopicLevel = Annotated[
    str,
    Field(min_length=1, max_length=100, pattern=rf"^[^/${_NOT_IN_TOPICS}][^/{_NOT_IN_TOPICS}]*$"),
]
# Tasmota's FullTopic: a topic that may end in `/`, with `%prefix%` and `%topic%` in it.
FullTopic = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=rf"^[^/${_NOT_IN_TOPICS}][^{_NOT_IN_TOPICS}]*$"),
]


# What a scale's reading means. `weighing`: each settled weight is an amount (an intake or a
# waste scale, where items are put on and taken off). `remaining`: the weight is what is left
# (a spool or a bin stands on it), so a decrease is the amount used and an increase a refill.
ScaleMode = Annotated[
    Literal["weighing", "remaining"],
    Field(
        description="`weighing`: each settled weight is an amount weighed. `remaining`: the "
        "scale holds a spool or a bin; a decrease is material used, an increase a refill."
    ),
]


class _Settings(BaseModel):
    """Keys every device may carry for turning its events into flows (read by `flows`)."""

    model_config = ConfigDict(extra="forbid")

    resource: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="The resource its jobs or weighings are made of, e.g. `wood`."
    )
    input_ring: Ring | None = Field(default=None, description="Where its material comes from.")
    energy_ring: Ring | None = Field(default=None, description="Where its electricity comes from.")
    recycled: bool | None = Field(default=None, description="Its material is secondary.")
    fate: Fate | None = Field(default=None, description="For a scale weighing waste out.")


class Filament(_Settings):
    """What a printer is loaded with, to turn a filament length into a mass."""

    material: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Loaded material, e.g. `PLA`; sent on each job."
    )
    filament_diameter_mm: float | None = Field(
        default=None, gt=0, le=10, description="1.75 when absent."
    )
    density_g_cm3: float | None = Field(
        default=None,
        gt=0,
        le=25,
        description="When absent, the loaded material's (PLA 1.24, PETG 1.27, ABS 1.04).",
    )


class OctoPrintSettings(Filament):
    base_topic: TopicPrefix = Field(
        default="octoPrint",
        description="The plugin's `publish.baseTopic` without the trailing slash. The default "
        "also matches the lowercase `octoprint/` of older plugin versions.",
    )


class MoonrakerSettings(Filament):
    instance_name: TopicPrefix = Field(
        description="Moonraker's `[mqtt] instance_name` (its default is the host name)."
    )
    jobs_from: Literal["status", "history"] = Field(
        default="status",
        description="Where finished jobs come from: `print_stats.state` changes in the status "
        "messages, or job-history responses on `{instance}/moonraker/api/response`. One "
        "source only, or each job would count twice.",
    )


class BambuSettings(Filament):
    serial: TopicLevel = Field(description="The printer's serial, as in `device/{serial}/report`.")
    host: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None, description="The printer's address on the LAN; the bridge connects to it."
    )
    port: int = Field(default=8883, gt=0, lt=65536)
    username: str = Field(default="bblp", description="LAN mode user.")
    access_code: str | None = Field(
        default=None, description="LAN access code shown on the printer's screen."
    )
    tls: bool = Field(default=True)
    tls_verify: bool = Field(
        default=False,
        description="Bambu printers present a certificate signed by Bambu's own CA; it does "
        "not verify against the system store, so verification is off by default.",
    )


class TasmotaSettings(_Settings):
    topic: TopicLevel = Field(description="The device's `%topic%`, e.g. `plug-lasercutter`.")
    full_topic: FullTopic = Field(
        default="%prefix%/%topic%/",
        description="Tasmota's FullTopic, with `%prefix%` and `%topic%`.",
    )
    material: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="For an HX711 scale: what it weighs."
    )
    direction: Literal["in", "out"] = Field(
        default="in", description="For a scale: material coming in or going out."
    )
    scale: ScaleMode = "weighing"

    @field_validator("full_topic")
    @classmethod
    def _has_both(cls, value: str) -> str:
        if "%prefix%" not in value or "%topic%" not in value:
            raise ValueError("full_topic must contain %prefix% and %topic%")
        return value


class ShellySettings(_Settings):
    topic_prefix: TopicPrefix = Field(
        description="The device's MQTT topic prefix (default the device id, "
        "e.g. `shellyplusplugs-e86beae12f10`)."
    )
    meter: Literal["switch", "em", "pm1"] = Field(
        default="switch",
        description="Which component counts energy: `switch:N`/`pm1:N` (aenergy) or a "
        "three-phase `em`/`emdata` meter.",
    )
    channel: int = Field(default=0, ge=0, le=16, description="The component id N.")


class ESPHomeSettings(_Settings):
    topic_prefix: TopicPrefix = Field(description="ESPHome's `mqtt.topic_prefix` (the node name).")
    discovery_prefix: TopicPrefix = "homeassistant"
    node_id: TopicLevel | None = Field(
        default=None,
        description="The node id in discovery topics; the topic prefix when absent.",
    )
    material: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    direction: Literal["in", "out"] = "in"
    scale: ScaleMode = "weighing"


class SparkplugSettings(_Settings):
    group_id: TopicLevel
    edge_node_id: TopicLevel
    device_id: TopicLevel | None = Field(
        default=None,
        description="A device behind the edge node; absent for the edge node itself, which "
        "then receives every message of the node.",
    )
    energy_metric: str | None = Field(
        default=None, description="Name of a cumulative energy counter metric."
    )
    energy_unit: Literal["Wh", "kWh"] = "kWh"
    weight_metric: str | None = Field(default=None, description="Name of a scale metric.")
    weight_unit: Literal["g", "kg"] = "kg"
    job_active_metric: str | None = Field(
        default=None,
        description="Name of a boolean metric that is true while a job runs; its fall to "
        "false ends a job.",
    )
    material: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    direction: Literal["in", "out"] = "in"
    scale: ScaleMode = "weighing"


class CloudEventsSettings(_Settings):
    topic: TopicPrefix = Field(
        description="The topic the device publishes CloudEvents on (binary mode on MQTT 5, "
        "or structured)."
    )


class PrusaLinkSettings(Filament):
    # It also names the poller's messages (`prusalink:{url}`), and so a topic of the device's
    # broker rules: no spaces, control characters or wildcards.
    url: Annotated[
        str, Field(min_length=1, max_length=500, pattern=rf"^https?://[^\s{_NOT_IN_TOPICS}]+$")
    ] = Field(description="The printer's PrusaLink address, e.g. `http://192.168.1.40`.")
    api_key: str | None = Field(default=None, description="`X-Api-Key` (older firmware).")
    username: str | None = Field(default=None, description="HTTP Digest user.")
    password: str | None = None
    poll_interval_s: float = Field(default=10.0, ge=1, le=3600)


class NativeSettings(Filament):
    """The native adapter: events on `fabcity/v1/...`. The keys the flows read (material,
    density, rings, fate) are checked, since a job's flows are derived from them; any other
    setting is kept as given."""

    model_config = ConfigDict(extra="allow")


SETTINGS: dict[str, type[BaseModel]] = {
    "fabcity": NativeSettings,
    "octoprint": OctoPrintSettings,
    "moonraker": MoonrakerSettings,
    "bambu": BambuSettings,
    "tasmota": TasmotaSettings,
    "shelly": ShellySettings,
    "esphome": ESPHomeSettings,
    "sparkplug": SparkplugSettings,
    "cloudevents": CloudEventsSettings,
    "prusalink": PrusaLinkSettings,
}

ADAPTERS = tuple(SETTINGS)


def validate_settings(adapter: str, settings: dict[str, Any]) -> BaseModel:
    """The settings as the adapter's model; raises `ValueError` (or `ValidationError`)."""
    model = SETTINGS.get(adapter)
    if model is None:
        raise ValueError(f"unknown adapter {adapter!r}; one of {', '.join(ADAPTERS)}")
    return model.model_validate(settings)


__all__ = ["ADAPTERS", "SETTINGS", "ValidationError", "validate_settings"]
