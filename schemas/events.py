"""CloudEvents 1.0 envelope and the `data` of each fabcity event type."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
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


class DesignRef(BaseModel):
    """A reference to an open design: an Open Know-How manifest and what is known of it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="OKH manifest URL.")
    licence: str | None = Field(default=None, max_length=200, description="SPDX licence id.")
    mass_kg: float | None = Field(default=None, ge=0, allow_inf_nan=False)


# Stored as integers in millionths of the canonical unit (64-bit): 10^9 units per value keeps
# every value, and sums of thousands of them, in range.
MAX_QUANTITY = 1e9
Quantity = Annotated[float, Field(ge=0, le=MAX_QUANTITY, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=100)]


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
    recycled: bool | None = Field(default=None, description="Input made of secondary material.")
    design: DesignRef | None = Field(
        default=None, description="The open design this flow made, cited or published."
    )
    job: Name | None = Field(default=None, description="Links inputs and outputs of one process.")

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


class MachineJobData(BaseModel):
    """A machine job that ended."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus
    started: AwareDatetime
    ended: AwareDatetime
    material: Name | None = None
    mass_kg: Quantity | None = None
    length_mm: Quantity | None = None
    energy_kwh: Quantity | None = None
    design: DesignRef | None = None

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

    net_kg: Annotated[float, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY, allow_inf_nan=False)]
    material: Name | None = None
    direction: Literal["in", "out"]


class DeviceStatusData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    online: bool


_FLOW_LIST: TypeAdapter[list[FlowData]] = TypeAdapter(
    Annotated[list[FlowData], Field(min_length=1, max_length=MAX_FLOWS_PER_EVENT)]
)
DATA_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.flow: FlowData,
    EventType.machine_job: MachineJobData,
    EventType.meter_reading: MeterReadingData,
    EventType.scale_reading: ScaleReadingData,
    EventType.device_status: DeviceStatusData,
}


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
    time: AwareDatetime | None = Field(
        default=None, description="When it happened (RFC 3339 with offset); receive time if absent."
    )
    subject: Annotated[str, Field(max_length=512)] | None = None
    datacontenttype: Literal["application/json"] | None = None
    dataschema: Annotated[str, Field(max_length=2048)] | None = None
    data: Any = None

    @model_validator(mode="after")
    def _data_matches_type(self) -> CloudEvent:
        self.data = validate_data(self.type, self.data)
        return self

    def flows(self) -> list[FlowData]:
        """The flows an event of type `fabcity.flow` carries; none for other types."""
        if self.type is not EventType.flow:
            return []
        return self.data if isinstance(self.data, list) else [self.data]


def event_time(event: CloudEvent, received: datetime) -> datetime:
    return event.time if event.time is not None else received
