"""Bodies of the open-standards API: OKW facilities, OKH designs and webhook subscriptions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from schemas.api import Rejected, Site, Slug
from schemas.events import EventType

METRICS_UPDATED = "fabcity.metrics.updated"
"""The CloudEvents type of a metric-update notice: windows of a city were recomputed."""

SUBSCRIBABLE_TYPES = frozenset({t.value for t in EventType} | {METRICS_UPDATED})

Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


# Open Know-Where ------------------------------------------------------------------------------


class Material(BaseModel):
    material_type: str
    resource: str | None = Field(
        default=None, description="The resource it is (`PLA` is `filament`); null if none."
    )
    manufacturer: str | None = None
    supplier_location: str | None = Field(
        default=None, description="Where the supplier is, as the record gives it, on one line."
    )
    supplier_latitude: float | None = Field(default=None, description="The supplier's place.")
    supplier_longitude: float | None = None


class Equipment(BaseModel):
    equipment_type: str
    manufacturer: str | None = None
    model: str | None = None
    manufacturing_process: list[str] = Field(default_factory=list)
    materials_worked: list[Material] = Field(
        default_factory=list, description="The materials it can work."
    )


class Facility(Site):
    """A site with what its Open Know-Where record says."""

    okw_id: str = Field(description="The record's stable key: its id or URL, else `name:{slug}`.")
    status: str | None = Field(description="`active`, `planned`, `temporary_closure`, `closed`.")
    access_type: str | None = Field(
        description="`public`, `restricted`, `restricted_with_public_hours`, `shared_space`, "
        "`membership`."
    )
    address: dict[str, Any] | None
    equipment: list[Equipment]
    materials: list[Material]
    verified_by: str | None = Field(description="Who last verified the record.")
    verified_at: datetime | None = Field(description="When it was last verified.")
    imported_at: datetime

    @computed_field(  # type: ignore[prop-decorator]
        description="The resources the site works: of its materials and its equipment's."
    )
    @property
    def resources(self) -> list[str]:
        worked = [m for e in self.equipment for m in e.materials_worked]
        return sorted({m.resource for m in (*self.materials, *worked) if m.resource})


class ImportedRecord(BaseModel):
    index: int = Field(description="Position of the record in the document (0 for one).")
    key: str = Field(description="What re-imports are matched on.")
    id: str = Field(description="The site slug (OKW) or the design id (OKH).")
    created: bool = Field(description="False when an earlier import, or a site, was updated.")
    matched: Literal["id", "name and location", "name"] | None = Field(
        default=None,
        description="What an OKW record was matched to its site on: its `id` (or URL), its "
        "name and location, or its name alone (no coordinates to compare); null if new.",
    )
    notes: list[str] = Field(
        default_factory=list, description="What was left out of the record, and why."
    )


class ImportResult(BaseModel):
    imported: list[ImportedRecord] = Field(default_factory=list)
    rejected: list[Rejected] = Field(default_factory=list)


# Open Know-How --------------------------------------------------------------------------------


class Circularity(BaseModel):
    """Inputs of the Ellen MacArthur Foundation's Material Circularity Indicator.

    Read from a manifest's `circularity` table; fractions not given are 0, efficiencies 1 and
    utility ratios 1 (an average product).
    """

    model_config = ConfigDict(extra="forbid")

    F_R: Fraction = Field(default=0.0, description="Feedstock from recycled sources.")
    F_U: Fraction = Field(default=0.0, description="Feedstock from reused sources.")
    F_S: Fraction = Field(
        default=0.0, description="Feedstock from sustained biological production."
    )
    C_R: Fraction = Field(default=0.0, description="Collected for recycling at end of life.")
    C_U: Fraction = Field(default=0.0, description="Collected for reuse.")
    C_C: Fraction = Field(default=0.0, description="Collected for composting.")
    C_E: Fraction = Field(default=0.0, description="Collected for energy recovery.")
    E_C: Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0, description="Efficiency of recycling at end of life."
    )
    E_F: Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0, description="Efficiency of producing recycled feedstock."
    )
    L_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=1.0, description="Lifetime over the industry average, L / L_av."
    )
    U_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=1.0, description="Use intensity over the industry average, U / U_av."
    )

    @model_validator(mode="after")
    def _fractions_add_up(self) -> Circularity:
        if self.F_R + self.F_U + self.F_S > 1 + 1e-9:
            raise ValueError("F_R + F_U + F_S exceeds 1")
        if self.C_R + self.C_U + self.C_C + self.C_E > 1 + 1e-9:
            raise ValueError("C_R + C_U + C_C + C_E exceeds 1")
        return self


class DesignPart(BaseModel):
    name: str
    mass_kg: float | None = Field(description="Null when the manifest does not say.")


class Design(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str = Field(description="The manifest URL; flows name the design by it.")
    title: str
    version: str | None
    licence: str | None = Field(
        description="SPDX licence expression of the hardware licence; null when it maps to none."
    )
    licence_text: str | None = Field(
        default=None, description="The hardware licence as the manifest wrote it."
    )
    licensor: str | None
    is_open: bool | None = Field(
        description="Every licence given is an open hardware or source one; null (unknown) when "
        "the manifest gives none, or one that maps to no SPDX licence."
    )
    oshwa_uid: str | None = Field(description="OSHWA certification id, e.g. `US002173`.")
    mass_kg: float | None = Field(description="Mass of one product; the parts' sum if not given.")
    parts: list[DesignPart]
    circularity: Circularity | None
    standard: Literal["okh-v1", "okh-losh"]
    updated_at: datetime


# Subscriptions ---------------------------------------------------------------------------------


DeliveryMode = Literal["structured", "batch", "binary"]
"""How a webhook receives CloudEvents: the HTTP binding's content modes."""

PARKED = "parked"
"""How the delivery log's error of a parked event begins: the receiver refused it (4xx) time
after time, and the subscription went on past it."""


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="The webhook that receives CloudEvents (HTTP POST).")
    city: Slug | None = Field(default=None, description="Only this city's events; all if absent.")
    types: list[str] = Field(
        default_factory=list,
        description="Event types to forward (`fabcity.flow`, …, and `fabcity.metrics.updated` "
        "for metric updates); all if empty.",
    )
    mode: DeliveryMode = Field(
        default="structured",
        description="`structured`: one event per request (`application/cloudevents+json`); "
        "`batch`: a JSON array (`application/cloudevents-batch+json`); `binary`: one event per "
        "request, its attributes in `ce-*` headers and its `data` the body.",
    )
    batch_size: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=100, description="Most events in one batch request."
    )
    from_beginning: bool = Field(
        default=False, description="Also send the events stored before the subscription."
    )

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - SUBSCRIBABLE_TYPES)
        if unknown:
            raise ValueError(
                f"unknown type(s) {', '.join(unknown)}; use {', '.join(sorted(SUBSCRIBABLE_TYPES))}"
            )
        return sorted(set(value))


class Subscription(BaseModel):
    id: int
    url: str
    city: str | None
    types: list[str]
    mode: DeliveryMode
    batch_size: int
    event_cursor: int = Field(description="The last event delivered (its number).")
    failures: int = Field(description="Failed attempts in a row; 0 when healthy.")
    next_attempt_at: datetime | None = Field(description="When a failed delivery is retried.")
    created_at: datetime


class Delivery(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    attempted_at: datetime
    stream: Literal["events", "notices"]
    first_id: int
    last_id: int
    count: int
    attempt: int
    status_code: int | None
    ok: bool
    error: str | None
    duration_ms: float

    @computed_field(  # type: ignore[prop-decorator]
        description="The receiver refused these events (4xx) again and again: they were "
        "skipped so that what follows them is delivered. The error says why."
    )
    @property
    def parked(self) -> bool:
        return self.error is not None and self.error.startswith(PARKED)
