"""Bodies of the read side: pages of a list, a city's summary and its breakdown, comparisons,
material flows."""

from __future__ import annotations

from datetime import date
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.api import (
    CONFIDENCE,
    PARTIAL,
    RANGE,
    Confidence,
    Coverage,
    MetricsResponse,
    ValueState,
)

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class Valued(BaseModel):
    """A metric's value over a period. Not recorded is null with a reason, never 0."""

    name: str = Field(description="The metric's name (METRICS.md).")
    unit: str
    value: float | None
    state: ValueState | None
    reason: str | None = None
    terms: list[str] | None = Field(default=None, description="DIDO and FCI: the terms used.")
    range: list[float] | None = Field(default=None, description=RANGE)
    confidence: Confidence | None = Field(default=None, description=CONFIDENCE)


class Figure(Valued):
    """One figure of a period."""

    label: str
    headline: bool = Field(default=False, description="One of the dashboard's headline tiles.")


class Account(BaseModel):
    """EW-MFA accounts of one material category (or `total`) over the period, in kg."""

    category: str = Field(description="MF1 … MF4, `none` (mass outside the MFA), or `total`.")
    label: str
    de: Figure
    imp: Figure
    exp: Figure
    dmc: Figure
    u: Figure


class Summary(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    city: str
    name: str
    timezone: str
    population: int | None
    from_: date = Field(alias="from", description="First day of the period, city time.")
    to: date = Field(description="Last day of the period (inclusive).")
    partial: bool = Field(default=False, description=PARTIAL.replace("window", "period"))
    coverage: Coverage
    figures: list[Figure]
    accounts: list[Account]


class Part(Valued):
    """One metric of one part of the city over the whole period."""

    key: str | None = Field(
        description="The part (a site's slug, a device as `site/device`, a resource, a "
        "ring, an MFA category), as the series' `key`; null without `group_by`."
    )


class Breakdown(BaseModel):
    """Metrics of a period, each over the whole period, for each part of the city its flows
    tell apart: what a day series by site, summed, would say, in one value per part."""

    model_config = ConfigDict(populate_by_name=True)

    city: str
    timezone: str
    group_by: Literal["site", "device", "resource", "mfa_category", "ring"] | None
    from_: date = Field(alias="from", description="First day of the period, city time.")
    to: date = Field(description="Last day of the period (inclusive).")
    partial: bool = Field(default=False, description=PARTIAL.replace("window", "period"))
    coverage: Coverage
    parts: list[Part] = Field(
        description="Metric by metric (in the order asked), part by part (in key order); a "
        "part with no flow in the period is not listed."
    )


class Comparison(BaseModel):
    """The same metrics of several cities, each in its own time zone's windows."""

    model_config = ConfigDict(populate_by_name=True)

    names: list[str]
    interval: Literal["hour", "day", "week", "month", "year"]
    from_: date | None = Field(alias="from")
    to: date | None
    cities: list[MetricsResponse]


NodeKind = Literal["origin", "category", "city", "recovered", "product", "waste", "stock"]


class SankeyNode(BaseModel):
    id: str
    label: str
    kind: NodeKind


class SankeyLink(BaseModel):
    source: str = Field(description="A node's `id`.")
    target: str
    value: float = Field(description="kg over the period.")
    state: ValueState | None = Field(
        description="Weakest state of the flows in it; the stock links are `modelled`."
    )


class Flows(BaseModel):
    """Material flows of a period as a Sankey diagram that balances.

    At every node that is neither a source nor a sink, what comes in equals what goes out:
    what stays in the city goes to the `stock:added` node, and outputs larger than the inputs
    of the period come from `stock:drawn`. Secondary material recovered in the city loops back
    as input through the `recovered` node.
    """

    model_config = ConfigDict(populate_by_name=True)

    city: str
    from_: date = Field(alias="from")
    to: date
    unit: Literal["kg"] = "kg"
    nodes: list[SankeyNode]
    links: list[SankeyLink]
    unweighed_count: float = Field(
        description="Things made or repaired whose mass is not known: not in the diagram."
    )
