"""CloudEvents 1.0 envelope and the `data` of each fabcity event type."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

MAX_FLOWS_PER_EVENT = 1000


class Action(StrEnum):
    """What happened to a resource (the ValueFlows verbs)."""

    produce = "produce"
    modify = "modify"
    consume = "consume"
    discard = "discard"
    recover = "recover"
    cite = "cite"
    publish = "publish"
    use = "use"
    work = "work"


class Ring(StrEnum):
    """Where an input came from, or where an output went."""

    site = "site"
    city = "city"
    region = "region"
    beyond = "beyond"


class Fate(StrEnum):
    """What became of discarded material."""

    reuse = "reuse"
    recycle = "recycle"
    compost = "compost"
    energy = "energy"
    incineration = "incineration"
    landfill = "landfill"


class EventType(StrEnum):
    flow = "fabcity.flow"
    machine_job = "fabcity.machine.job"
    meter_reading = "fabcity.meter.reading"
    scale_reading = "fabcity.scale.reading"
    device_status = "fabcity.device.status"
    # A correction: the event it names (same source) counts no more. See `corrected`.
    retracted = "fabcity.event.retracted"


# A design's manifest URL: http(s) with a host, no whitespace or control characters. The
# dashboard and clients follow it as a link, so `javascript:alert(1)` (or `data:`, `file:`)
# would run or read what the reader never meant to. (The registry checks its own URLs the
# same way: `fabcity.registry.designs.manifest_url`.)
DESIGN_URL = re.compile(r"[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s\x00-\x1f\x7f]+[^\s\x00-\x1f\x7f]*")


class DesignRef(BaseModel):
    """A reference to an open design: an Open Know-How manifest and what is known of it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=2048, description="OKH manifest URL: http(s)://host/…"
    )
    licence: str | None = Field(default=None, max_length=200, description="SPDX licence id.")
    mass_kg: float | None = Field(default=None, ge=0, allow_inf_nan=False, strict=True)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not DESIGN_URL.fullmatch(value):
            raise ValueError(
                "a design's URL must be http(s)://host/… without spaces or control "
                f"characters, not {value[:80]!r}"
            )
        return value


# Stored as integers in millionths of the canonical unit (64-bit): 10^9 units per value keeps
# every value, and sums of thousands of them, in range.
MAX_QUANTITY = 1e9
# Strict: a number is a JSON number. Lax pydantic would read `true` as 1 and "12" as 12.
Quantity = Annotated[float, Field(ge=0, le=MAX_QUANTITY, allow_inf_nan=False, strict=True)]
Name = Annotated[str, Field(min_length=1, max_length=100)]
# Strict as well: lax pydantic reads 1, "yes" and "on" as true.
Flag = Annotated[bool, Field(strict=True)]

# An RFC 3339 date-time (section 5.6), as CloudEvents requires for `time`: full date, `T` (or
# `t`, or a space), hours, minutes and seconds, an optional fraction, and `Z` or an offset.
# A time without its offset passes here, to be refused by `AwareDatetime`, which says so.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)?\Z")


def _rfc3339(value: object) -> object:
    """Pydantic alone also reads a number, or a string of digits, as Unix time: a sender's
    `1700000000` in seconds and one in milliseconds would land decades apart, silently."""
    if isinstance(value, datetime):  # made in Python (adapters, tests), not read from JSON
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError(
            "must be an RFC 3339 date-time string with an offset, e.g. 2026-11-27T10:00:00+01:00"
        )
    return value


Time = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


class FlowData(BaseModel):
    """One flow: an action on a resource, a quantity in a unit, and the ring it crosses."""

    model_config = ConfigDict(extra="forbid")

    action: Action
    resource: Name = Field(description="A resource of the registry, e.g. `filament`.")
    quantity: Quantity
    unit: Name = Field(description="The quantity's unit; converted when the conversion is exact.")
    ring: Ring = Field(
        description="Where the input came from or the output went (`cell` = `site`)."
    )
    material: Name | None = Field(default=None, description="Finer material, e.g. `PLA`.")
    fate: Fate | None = Field(default=None, description="For `discard`: what became of it.")
    recycled: Flag | None = Field(default=None, description="Input made of secondary material.")
    design: DesignRef | None = Field(
        default=None, description="The open design this flow made, cited or published."
    )
    job: Name | None = Field(default=None, description="Links inputs and outputs of one process.")
    mass_kg: Quantity | None = Field(
        default=None,
        description="For things counted (`part`, `furniture`…): their mass in kg, counted as "
        "the resource `material` names (e.g. `wood`). A design's mass is then not modelled.",
    )

    @field_validator("ring", mode="before")
    @classmethod
    def _cell_is_site(cls, value: object) -> object:
        return "site" if value == "cell" else value

    @field_validator("design", mode="before")
    @classmethod
    def _design_url_shorthand(cls, value: object) -> object:
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fate_only_on_discard(self) -> FlowData:
        if self.fate is not None and self.action is not Action.discard:
            raise ValueError("`fate` applies only to `discard` flows")
        return self


class JobStatus(StrEnum):
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


# The figures of a machine job that may be estimates (`MachineJobData.modelled`).
ModelledFigure = Literal["started", "mass_kg", "length_mm", "energy_kwh"]


class MachineJobData(BaseModel):
    """A machine job that ended."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus
    started: Time
    ended: Time
    material: Name | None = None
    mass_kg: Quantity | None = None
    length_mm: Quantity | None = None
    energy_kwh: Quantity | None = None
    design: DesignRef | None = None
    modelled: list[ModelledFigure] | None = Field(
        default=None,
        max_length=4,
        description="Figures that are estimates rather than what the machine measured: "
        "`mass_kg` from a slicer's G-code, `started` from when a message arrived. Flows made "
        "from them are `modelled`.",
    )

    @model_validator(mode="after")
    def _ends_after_start(self) -> MachineJobData:
        if self.ended < self.started:
            raise ValueError("`ended` is before `started`")
        return self


class MeterReadingData(BaseModel):
    """An energy meter: a cumulative counter or a delta, in kWh."""

    model_config = ConfigDict(extra="forbid")

    energy_kwh_total: Quantity | None = None
    energy_kwh: Quantity | None = None

    @model_validator(mode="after")
    def _one_of(self) -> MeterReadingData:
        if (self.energy_kwh_total is None) == (self.energy_kwh is None):
            raise ValueError("give exactly one of `energy_kwh_total` and `energy_kwh`")
        return self


class ScaleReadingData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    net_kg: Annotated[
        float, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY, allow_inf_nan=False, strict=True)
    ]
    material: Name | None = None
    direction: Literal["in", "out"]


class DeviceStatusData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    online: Flag


EventId = Annotated[str, Field(min_length=1, max_length=256)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]


class RetractedData(BaseModel):
    """A retraction: the event `id` of the same `source` counts no more (its flows leave the
    rollups). It stays stored, and so does this event: history is only ever added to."""

    model_config = ConfigDict(extra="forbid")

    id: EventId = Field(description="The `id` of the event retracted; its `source` is this one's.")
    reason: Reason | None = Field(default=None, description="Why, for whoever reads the figure.")


_FLOW_LIST: TypeAdapter[list[FlowData]] = TypeAdapter(
    Annotated[list[FlowData], Field(min_length=1, max_length=MAX_FLOWS_PER_EVENT)]
)
DATA_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.flow: FlowData,
    EventType.machine_job: MachineJobData,
    EventType.meter_reading: MeterReadingData,
    EventType.scale_reading: ScaleReadingData,
    EventType.device_status: DeviceStatusData,
    EventType.retracted: RetractedData,
}

# The extension attribute of a replacement: the `id` of the event (of the same `source`) whose
# place it takes. Lower-case letters only, as CloudEvents requires of attribute names.
SUPERSEDES = "supersedes"
CorrectionKind = Literal["retract", "supersede"]


def validate_data(type_: EventType, data: Any) -> Any:
    """The `data` of an event of `type_`, validated; errors are located under `data`."""
    try:
        if type_ is EventType.flow and isinstance(data, list):
            return _FLOW_LIST.validate_python(data)
        return DATA_MODELS[type_].model_validate(data)
    except ValidationError as exc:
        errors: list[Any] = [
            {k: v for k, v in e.items() if k in ("type", "input", "ctx")}
            | {"loc": ("data", *e["loc"])}
            for e in exc.errors(include_url=False)
        ]
        raise ValidationError.from_exception_data(exc.title, errors) from None


# Attribute names as CloudEvents 1.0 allows them: lower-case ASCII letters and digits, at most
# 20 characters. Receivers that validate with the CloudEvents SDKs refuse any other name, so an
# event that carries one must be refused here rather than stored and forwarded.
ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,20}\Z")
# Members of a structured event that are neither attributes nor extensions.
_DATA_MEMBERS = frozenset({"data", "data_base64"})
# A JSON media type, with its parameters: `application/json; charset=utf-8`, `text/json`,
# `application/vnd.example+json`. fabcity events carry JSON data and nothing else.
_JSON_MEDIA = re.compile(r"(application|text)/([a-z0-9!#$&^_.-]+\+)?json\s*(;.*)?\Z", re.I)
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^;\"\s]+)", re.I)


def is_json_media(media_type: str) -> bool:
    """Whether data of this content type is JSON text that fabcity can read (UTF-8)."""
    if not _JSON_MEDIA.match(media_type.strip()):
        return False
    charset = _CHARSET.search(media_type)
    return charset is None or charset.group(1).lower() in ("utf-8", "utf8")


def decode_data_base64(raw: dict[str, Any]) -> dict[str, Any]:
    """A structured event with `data_base64` (as the SDKs write bytes data) as the same event
    with its `data` read as JSON, the way it is stored. Raises ValueError, saying why."""
    if "data_base64" not in raw:
        return raw
    encoded = raw["data_base64"]
    if "data" in raw:
        raise ValueError("an event carries `data` or `data_base64`, not both")
    if not isinstance(encoded, str):
        raise ValueError("`data_base64` must be a base64 string")
    media = raw.get("datacontenttype")
    if isinstance(media, str) and not is_json_media(media):
        raise ValueError(f"data of content type {media!r}; fabcity events carry JSON data")
    try:
        text = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"`data_base64` is not base64: {exc}") from None
    try:
        data = orjson.loads(text) if text else None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"`data_base64` does not hold JSON: {exc}") from None
    out = {k: v for k, v in raw.items() if k != "data_base64"}
    out["data"] = data
    return out


def extension_errors(names: Iterable[str]) -> list[str]:
    """What is wrong with these attribute names, one sentence each."""
    return [
        f"extension attribute {name!r}: names are lower-case letters a-z and digits 0-9, "
        "at most 20 characters"
        for name in names
        if name not in _DATA_MEMBERS and not ATTRIBUTE_NAME.match(name)
    ]


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode.

    `source` names who sent it: `/{city}/{site}` for a site, `/{city}/{site}/{device}` for a
    device. `(source, id)` is unique: a repeat is a duplicate.
    """

    # CloudEvents allows extension attributes; they are kept in the stored JSON.
    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: Annotated[str, Field(min_length=1, max_length=256)]
    source: Annotated[str, Field(min_length=1, max_length=512)]
    type: EventType
    time: Time | None = Field(
        default=None, description="When it happened (RFC 3339 with offset); receive time if absent."
    )
    subject: Annotated[str, Field(max_length=512)] | None = None
    datacontenttype: Annotated[str, Field(max_length=200)] | None = Field(
        default=None,
        description="A JSON media type, parameters allowed (`application/json; charset=utf-8`).",
    )
    dataschema: Annotated[str, Field(max_length=2048)] | None = None
    data: Any = None

    @model_validator(mode="before")
    @classmethod
    def _data_from_base64(cls, value: Any) -> Any:
        return decode_data_base64(value) if isinstance(value, dict) else value

    @field_validator("datacontenttype")
    @classmethod
    def _json_data(cls, value: str | None) -> str | None:
        if value is not None and not is_json_media(value):
            raise ValueError(
                f"data of content type {value!r}; fabcity events carry JSON "
                "(application/json, with an optional charset=utf-8)"
            )
        return value

    @model_validator(mode="after")
    def _data_matches_type(self) -> CloudEvent:
        extensions = self.model_extra or {}
        errors = extension_errors(extensions)
        if errors:
            raise ValueError("; ".join(errors))
        if SUPERSEDES in extensions:
            target = extensions[SUPERSEDES]
            if not isinstance(target, str) or not 1 <= len(target) <= 256:
                raise ValueError(
                    f"`{SUPERSEDES}` is the id of the event replaced: a string of 1 to 256 "
                    "characters"
                )
            if self.type is EventType.retracted:
                raise ValueError(
                    f"a retraction names its event in `data.id`; `{SUPERSEDES}` belongs on a "
                    "replacement event"
                )
        self.data = validate_data(self.type, self.data)
        return self

    def corrected(self) -> tuple[CorrectionKind, str] | None:
        """What this event corrects: `("retract", id)` for a retraction, `("supersede", id)`
        for a replacement (any other type, with the extension attribute `supersedes`), the
        `id` being that of an event of the same `source`; None for an ordinary event."""
        if self.type is EventType.retracted:
            return "retract", self.data.id
        target = (self.model_extra or {}).get(SUPERSEDES)
        return ("supersede", target) if isinstance(target, str) else None

    def flows(self) -> list[FlowData]:
        """The flows an event of type `fabcity.flow` carries; none for other types."""
        if self.type is not EventType.flow:
            return []
        return self.data if isinstance(self.data, list) else [self.data]


def event_time(event: CloudEvent, received: datetime) -> datetime:
    return event.time if event.time is not None else received


# The event as stored, read back (`GET /v1/events`, `GET /v1/events/{source}/{id}`) ----------


class EventSummary(BaseModel):
    """A stored event, one line of a list."""

    source: str
    id: str
    type: str
    time: datetime = Field(description="When it happened (its receive time if it said not).")
    received_at: datetime
    city: str
    site: str
    device: str | None
    counts: bool = Field(
        description="Whether its flows count in the rollups: false once it is retracted or "
        "superseded, for a retraction, and for a correction a newer one overtook."
    )


class CorrectionRef(BaseModel):
    """A correction, as the event it corrects (or that corrects it) names it."""

    source: str
    id: str
    kind: CorrectionKind
    rank: int = Field(description="1 for the original's first correction, 2 for the next, …")
    reason: str | None
    received_at: datetime
    counts: bool = Field(description="It is the original's newest correction.")


class Corrected(BaseModel):
    """The event a correction corrects, and the correction's place among its corrections."""

    source: str
    id: str
    kind: CorrectionKind
    rank: int


class StoredFlow(BaseModel):
    """A flow derived from the event, in its resource's canonical unit."""

    action: str
    resource: str
    quantity: float
    unit: str
    ring: str
    fate: str | None
    recycled: bool
    material: str | None
    design_url: str | None
    job: str | None
    state: str = Field(description="`measured`, `reported` or `modelled`.")
    counted: bool = Field(
        description="In the rollups. An event that counts no more shows the flows it would "
        "derive, not counted."
    )


class DeviceUsed(BaseModel):
    """The device whose settings turn the event into flows (material, filament diameter, …),
    as registered now: a rebuild derives with these."""

    device: str
    kind: str
    adapter: str
    settings: dict[str, Any]


class EventWindow(BaseModel):
    """A window the event's flows count in, in the city's time zone."""

    interval: Literal["hour", "day", "week", "month", "year"]
    start: datetime
    end: datetime


class EventView(EventSummary):
    """One stored event and what it became."""

    event: dict[str, Any] = Field(description="The event as stored (JSON, as it came).")
    flows: list[StoredFlow]
    device_used: DeviceUsed | None
    corrects: Corrected | None = Field(description="For a correction: the event it corrects.")
    corrections: list[CorrectionRef] = Field(description="Corrections of this event, in order.")
    windows: list[EventWindow] = Field(
        description="The windows its flows count in; none when it does not count."
    )
    why: str | None = Field(description="Why it does not count, when it does not.")
