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


class SheetRow(BaseModel):
    row: int = Field(description="The row's number in the spreadsheet (the header is row 1).")
    outcome: Literal["accepted", "duplicate", "refused"]
    event: str | None = Field(default=None, description="The id of the event the row is in.")
    reason: str | None = Field(default=None, description="Why it was refused, and the fix.")


class SheetReport(BaseModel):
    """What became of each row of an uploaded spreadsheet."""

    accepted: int = Field(description="Rows stored by this upload.")
    duplicates: int = Field(description="Rows stored by an earlier upload: counted once.")
    refused: int
    rows: list[SheetRow]


class MetricDefinition(BaseModel):
    name: str
    title: str = Field(description="What to call it in a report.")
    unit: str
    says: str = Field(description="What it tells, in a sentence.")
    formula: str
    sources: str = Field(description="The events and flows it is made from.")
    notes: str = ""


class Definitions(BaseModel):
    """What every metric means, and what a value carries besides its number."""

    metrics: list[MetricDefinition]
    concepts: dict[str, str] = Field(
        description="state, null, range, confidence, partial, coverage: what each means."
    )


class TargetIn(BaseModel):
    """A goal for one metric of a city: at least (or at most) `value` by `due`, e.g. a local
    input share of at least 0.5 by 2030-12-31."""

    model_config = ConfigDict(extra="forbid")

    direction: Literal["at_least", "at_most"] = Field(
        default="at_least", description="Whether the figure should rise to it or fall to it."
    )
    value: float = Field(
        allow_inf_nan=False, ge=-1e12, le=1e12, description="In the metric's unit (a share: 0–1)."
    )
    due: date = Field(description="The day by which it should be met.")
    note: Annotated[str, Field(max_length=500)] | None = Field(
        default=None, description="Where it comes from: a plan, a council decision."
    )


class Target(TargetIn):
    model_config = ConfigDict(from_attributes=True)

    metric: str
    unit: str
    updated_at: datetime


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


# No city holds a billion people (the largest metropolitan areas hold under 40 million): a
# larger number is a typing slip that would divide every per-person figure by it.
Population = Annotated[int, Field(ge=0, le=1_000_000_000)]


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
    population: Population | None = None


class City(CityIn):
    model_config = ConfigDict(extra="ignore", from_attributes=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    retired_at: datetime | None = Field(
        default=None, description="When it was retired: its events are kept, new ones refused."
    )


class CityPatch(BaseModel):
    """What may change of a city. Its slug may not: every event's source names it. A field
    left out is left as it is; `population: null` clears it."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    country: Annotated[str, Field(min_length=2, max_length=2)] | None = None
    timezone: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=64,
                description="IANA time zone. Every stored event and flow of the city moves to "
                "its local day and hour in the new zone, and the windows they left and entered "
                "are recomputed. The city's events that arrive meanwhile wait for the move, "
                "and are placed in the new zone.",
            ),
        ]
        | None
    ) = None
    population: Population | None = None


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
    retired_at: datetime | None = Field(
        default=None, description="When it was retired: its events are kept, new ones refused."
    )


class SitePatch(BaseModel):
    """What may change of a site: a field left out is left as it is; `latitude: null` and
    `longitude: null` clear them. Its slug may not change (every event's source names it), nor
    its city: `city` is accepted only to say so."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    kind: SiteKind | None = None
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None
    city: Slug | None = Field(
        default=None,
        description="Refused unless it is the site's own city: a site's events name its city "
        "in their source. Register the site in the other city and retire this one.",
    )


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
    listening_since: datetime | None = Field(
        default=None,
        description="Since when the bridge takes the device's messages as it is registered "
        "now: its topics subscribed at the broker (native topics: the bridge's own "
        "subscription), or its printer link answering (Bambu connected, PrusaLink polled). "
        "Set within a second of a registration or a change of settings while a bridge runs; "
        "null until then, while no bridge reads device topics, or when the printer does not "
        "answer.",
    )
    retired_at: datetime | None = Field(
        default=None, description="When it was retired: its events are kept, new ones refused."
    )


class DevicePatch(BaseModel):
    """What may change of a device: a field left out is left as it is. `settings` replaces the
    stored settings whole. A change of `kind` or `settings` derives the flows of every stored
    event of the device again, and recomputes the windows they left and entered; the city's
    events that arrive meanwhile wait for it, and are derived from the new settings."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    kind: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    adapter: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    settings: dict[str, Any] | None = None


class Removal(BaseModel):
    """What a DELETE did: an entry that events refer to is retired (kept, refusing new
    events); one that nothing refers to is deleted."""

    entry: str = Field(description="`/{city}`, `/{city}/{site}` or `/{city}/{site}/{device}`.")
    outcome: Literal["retired", "deleted"]
    retired_at: datetime | None = None
    detail: str


class RegistryChange(BaseModel):
    """One change to the registry, as logged: who, when, before and after."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    entry: str = Field(description="`city`, `site`, `device`, `statistics` or `resource`.")
    name: str = Field(
        description="The entry: `/{city}/{site}/{device}`, `/{city}/{year}` for statistics, "
        "or a resource's name."
    )
    action: Literal["create", "update", "retire", "delete"]
    before: dict[str, Any] | None = Field(description="The fields that changed, as they were.")
    after: dict[str, Any] | None = Field(description="The same fields, as they became.")
    actor: str = Field(description="Who: `key 12 (admin)`, `admin`, or `cli`.")
    windows: int = Field(description="Hours of the city sent to be recomputed by the change.")


class Resource(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    unit: str
    dimension: str
    mfa_category: str | None
    secondary: bool


Dimension = Literal["mass", "energy", "count", "time", "volume"]
MfaCategory = Literal["MF1", "MF2", "MF3", "MF4"]


class ResourceIn(BaseModel):
    """A resource to add to the registry. Its unit is the canonical unit of its dimension
    (kg, kWh, count, h, m3); quantities in exact multiples of it are converted."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[
        str,
        Field(
            min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_]*$",
            description="Lower case, digits and `_`, e.g. `plywood`.",
        ),
    ]  # fmt: skip
    dimension: Dimension = Field(description="What it is measured by.")
    mfa_category: MfaCategory | None = Field(
        default=None,
        description="EW-MFA category for mass resources: MF1 biomass, MF2 metal ores, MF3 "
        "non-metallic minerals, MF4 fossil energy materials. Null: outside the accounts.",
    )
    secondary: bool = Field(
        default=False,
        strict=True,
        description="Made of waste (recycled, recovered): its inputs count as recycled.",
    )


ValueState = Literal["measured", "reported", "modelled"]


class Coverage(BaseModel):
    events: int = Field(description="Events stored in the window.")
    sites_reporting: int = Field(description="Sites with at least one event in the window.")
    sites_active: int = Field(description="Sites registered in the city.")


Confidence = Literal["low", "medium", "high"]
RANGE = (
    "[low, high]. DIDO with terms not recorded: its mean with those terms at 0 and at 1 "
    "(`value` is the mean of the recorded terms). FCI: DIDO's range × (1 − PITO); when PITO "
    "is not recorded, `value` is null and FCI lies in [0, DIDO] (DIDO's upper bound)."
)
CONFIDENCE = (
    "How far the value can be trusted as a picture of the city (METRICS.md): `low` when the "
    "window is not over yet, fewer than 10 events stand behind it or fewer than half of the "
    "active sites reported; `high` when it is over, with at least 30 events, 80 % of the "
    "active sites reporting and (DIDO, FCI) every term recorded; else `medium`. Null when "
    "the value is not recorded."
)
PARTIAL = (
    "The window is not over yet: more events may still come, so its figures are not final "
    "(a week with two days of data is not a week of little activity)."
)


class Point(BaseModel):
    start: datetime | date = Field(
        description="Start of the window in the city's time zone: a date (a local day, week, "
        "month or year), or for an hourly window the time it starts with the offset then in "
        "force: the two passes of an hour the clock repeats are two windows, "
        "`02:00:00+02:00` and `02:00:00+01:00`."
    )
    value: float | None = Field(description="Null when not recorded: never a made-up zero.")
    state: ValueState | None
    reason: str | None = Field(default=None, description="Why the value is null.")
    terms: list[str] | None = Field(
        default=None, description="DIDO and FCI: the terms the value was computed from."
    )
    range: list[float] | None = Field(default=None, description=RANGE)
    confidence: Confidence | None = Field(default=None, description=CONFIDENCE)
    partial: bool = Field(default=False, description=PARTIAL)
    coverage: Coverage


class Series(BaseModel):
    name: str
    unit: str
    key: str | None = Field(
        default=None,
        description="The group, when `group_by` is given. By device: `site/device` across "
        "the city's sites (`site/(site reports)`: a site's own reports), the device's slug "
        "alone with `site`.",
    )
    points: list[Point]


class MetricsResponse(BaseModel):
    city: str
    interval: Literal["hour", "day", "week", "month", "year"]
    timezone: str
    group_by: str | None
    series: list[Series]
