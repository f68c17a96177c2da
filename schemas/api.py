"""Bodies of the HTTP API."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Slug = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
]
# A name shown to people, as given to the API: no control characters (a NUL cannot even be
# stored in PostgreSQL). Answers do not check it: names imported from Open Know-Where came by
# another way, and a stored name is shown as it is.
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Rejected(BaseModel):
    index: int = Field(description="Position of the refused event in the request (0 for one).")
    error: str = Field(description="What is wrong and how to fix it.")


class IngestResult(BaseModel):
    accepted: int = Field(description="Events stored by this request.")
    duplicates: int = Field(description="Events already stored before: counted once.")
    rejected: list[Rejected] = Field(default_factory=list)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class SiteKind(StrEnum):
    fablab = "fablab"
    makerspace = "makerspace"
    urban_factory = "urban_factory"
    recycling_hub = "recycling_hub"
    home = "home"
    garden = "garden"
    other = "other"


class CityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug
    name: Name
    country: Annotated[str, Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2.")]
    # The longest IANA name has 32 characters; a name is also a file path to the time zone
    # database, so a long one failed as "file name too long".
    timezone: Annotated[
        str,
        Field(min_length=1, max_length=64, description="IANA time zone, e.g. `Europe/Barcelona`."),
    ] = "UTC"
    population: Annotated[int, Field(ge=0)] | None = None


class City(CityIn):
    model_config = ConfigDict(extra="ignore", from_attributes=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug
    name: Name
    kind: SiteKind = SiteKind.fablab
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None


class Site(SiteIn):
    model_config = ConfigDict(extra="ignore", from_attributes=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]

    city: Slug


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug
    name: Name
    kind: Annotated[str, Field(min_length=1, max_length=50)] = "printer"
    adapter: Annotated[str, Field(min_length=1, max_length=50)] = Field(
        default="fabcity",
        description="How its messages are read: `fabcity` (native topics), `octoprint`, "
        "`moonraker`, `bambu`, `tasmota`, `shelly`, `esphome`, `sparkplug`, `cloudevents`, "
        "`prusalink`.",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="The adapter's settings (topic or address, material, meter); "
        "validated per adapter, see `schemas/devices.py`.",
    )


class Device(DeviceIn):
    model_config = ConfigDict(extra="ignore", from_attributes=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]

    city: Slug
    site: Slug
    online: bool | None = Field(
        default=None, description="From the device's will/birth/status messages; null: unknown."
    )
    last_seen: datetime | None = Field(
        default=None, description="When the platform last received a message from the device."
    )


class Resource(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    unit: str
    dimension: str
    mfa_category: str | None
    secondary: bool


ValueState = Literal["measured", "reported", "modelled"]


class Coverage(BaseModel):
    events: int = Field(description="Events stored in the window.")
    sites_reporting: int = Field(description="Sites with at least one event in the window.")
    sites_active: int = Field(description="Sites registered in the city.")


class Point(BaseModel):
    start: datetime | date = Field(
        description="Start of the window in the city's time zone: a date, or a local time "
        "with its offset for hourly windows."
    )
    value: float | None = Field(description="Null when not recorded: never a made-up zero.")
    state: ValueState | None
    reason: str | None = Field(default=None, description="Why the value is null.")
    terms: list[str] | None = Field(
        default=None, description="DIDO and FCI: the terms the value was computed from."
    )
    range: list[float] | None = Field(
        default=None, description="FCI when PITO is not recorded: [0, DIDO]."
    )
    coverage: Coverage


class Series(BaseModel):
    name: str
    unit: str
    key: str | None = Field(default=None, description="The group, when `group_by` is given.")
    points: list[Point]


class MetricsResponse(BaseModel):
    city: str
    interval: Literal["hour", "day", "week", "month", "year"]
    timezone: str
    group_by: str | None
    series: list[Series]
