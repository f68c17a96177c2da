"""The metrics, as pure functions of rollup cells (formulas: METRICS.md).

A cell is one row of a flow rollup. A metric over any window or breakdown is computed from the
cells inside it, so sums are added and ratios are taken of sums, never averaged. A value that
was not recorded is `None` with a reason, never 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal

from fabcity.core.models import MICRO

GroupBy = Literal["site", "device", "resource", "mfa_category", "ring"]
Confidence = Literal["low", "medium", "high"]

# The weakest state among a value's inputs is the value's state.
_STATE_RANK = {"measured": 0, "reported": 1, "modelled": 2}
LOCAL = frozenset({"site", "city"})
REGIONAL = frozenset({"site", "city", "region"})
OUTSIDE = frozenset({"region", "beyond"})
DIVERTED = frozenset({"reuse", "recycle", "compost"})
LINEAR_FATES = frozenset({"landfill", "incineration"})


@dataclass(frozen=True)
class Cell:
    start: date | datetime  # the window it falls in
    site: str
    device: str
    action: str
    resource: str
    dimension: str
    mfa_category: str | None
    ring: str
    fate: str
    recycled: bool
    design: str  # '' none, 'open', 'closed', 'unregistered', 'unknown' (licence)
    state: str
    amount: int  # millionths of the canonical unit
    design_mass: int  # millionths of kg, modelled from designs
    design_mass_flows: int
    flows: int


@dataclass(frozen=True)
class WindowFacts:
    """What a window's metrics need beyond its flows."""

    hours: float
    sites_active: int
    sites_reporting: int
    events: int
    population: int | None
    partial: bool = False  # the window is not over yet


@dataclass(frozen=True)
class Value:
    value: float | None
    state: str | None
    reason: str | None = None
    terms: tuple[str, ...] | None = None  # DIDO and FCI: the terms the value used
    # DIDO with unrecorded terms: the mean with them at 0 and at 1. FCI: follows from DIDO's,
    # or [0, DIDO] when PITO is not recorded (then `value` is None).
    range: tuple[float, float] | None = None
    confidence: Confidence | None = None  # set by `assess`, from the window's coverage


def missing(reason: str) -> Value:
    return Value(None, None, reason)


def weakest(states: Iterable[str | None]) -> str | None:
    known = {s for s in states if s is not None}
    return max(known, key=_STATE_RANK.__getitem__) if known else None


def _sum(cells: Iterable[Cell]) -> float:
    return sum(c.amount for c in cells) / MICRO


def _select(cells: Sequence[Cell], test: Callable[[Cell], bool]) -> list[Cell]:
    return [c for c in cells if test(c)]


def _total(cells: Sequence[Cell], reason: str) -> Value:
    if not cells:
        return missing(reason)
    return Value(_sum(cells), weakest(c.state for c in cells))


def _ratio(part: float, whole: float, states: Iterable[str | None], reason: str) -> Value:
    if whole <= 0:
        return missing(reason)
    return Value(part / whole, weakest(states))


# Cell classes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sum:
    """A class of cells whose amounts a metric adds up, by what they are: declared once, and
    tested on cells here and in SQL by the series (`fabcity.read.series`). `None`: any."""

    action: str
    dimension: str | None = None
    resource: str | None = None
    ring: frozenset[str] | None = None
    fate: frozenset[str] | None = None
    design: frozenset[str] | None = None
    recycled: bool | None = None

    def holds(self, c: Cell) -> bool:
        return (
            c.action == self.action
            and (self.dimension is None or c.dimension == self.dimension)
            and (self.resource is None or c.resource == self.resource)
            and (self.ring is None or c.ring in self.ring)
            and (self.fate is None or c.fate in self.fate)
            and (self.design is None or c.design in self.design)
            and (self.recycled is None or c.recycled == self.recycled)
        )


INPUTS = Sum("consume", dimension="mass")  # inputs: `consume` flows of mass resources
WASTE = Sum("discard", dimension="mass")
MADE = Sum("produce", dimension="count")
ELECTRICITY = Sum("consume", resource="electricity")
# Things made from a design reference whose licence is open (or not yet registered, or not
# known: a design is not counted closed for a licence we could not read).
OPEN_DESIGNS = frozenset({"open", "unregistered", "unknown"})


def inputs(cells: Sequence[Cell]) -> list[Cell]:
    return _select(cells, INPUTS.holds)


def _mfa(cells: Sequence[Cell]) -> list[Cell]:
    return _select(cells, lambda c: c.mfa_category is not None)


def _waste(cells: Sequence[Cell]) -> list[Cell]:
    return _select(cells, WASTE.holds)


def _made(cells: Sequence[Cell]) -> list[Cell]:
    return _select(cells, MADE.holds)


def _electricity(cells: Sequence[Cell]) -> list[Cell]:
    return _select(cells, ELECTRICITY.holds)


@dataclass(frozen=True)
class Additive:
    """A metric that is the sum of one class of cells (`whole`), or the share of it that is
    also of `part`: what the series can add up per window in SQL, leaving Python the ratio."""

    whole: Sum
    reason: str  # why it is null: `whole` holds no cells (or, for a share, sums to 0)
    part: Sum | None = None  # a share: the cells of `whole` that are also of `part`

    def __call__(self, cells: Sequence[Cell], _: WindowFacts) -> Value:
        found = _select(cells, self.whole.holds)
        if self.part is None:
            return _total(found, self.reason)
        part = _sum(c for c in found if self.part.holds(c))
        return _ratio(part, _sum(found), (c.state for c in found), self.reason)


def _share(whole: Sum, reason: str, **part: Any) -> Additive:
    return Additive(whole, reason, Sum(whole.action, **part))


# Local production -------------------------------------------------------------------------


def produced_kg(cells: Sequence[Cell], _: WindowFacts) -> Value:
    """Mass made: from mass flows, else count × the design's mass (then `modelled`)."""
    weighed = _select(cells, lambda c: c.action == "produce" and c.dimension == "mass")
    modelled = [c for c in _made(cells) if c.design_mass_flows]
    if not weighed and not modelled:
        return missing("no produced mass recorded, and no design mass to model it from")
    value = _sum(weighed) + sum(c.design_mass for c in modelled) / MICRO
    states = [c.state for c in weighed] + ["modelled"] * bool(modelled)
    return Value(value, weakest(states))


ENERGY_KWH = Additive(ELECTRICITY, "no electricity recorded")


def energy_per_kg(cells: Sequence[Cell], ctx: WindowFacts) -> Value:
    energy, made = ENERGY_KWH(cells, ctx), produced_kg(cells, ctx)
    if energy.value is None or made.value is None:
        return missing("needs both energy_kwh and produced_kg")
    return _ratio(energy.value, made.value, (energy.state, made.state), "produced_kg is 0")


def _hours_of(resource: str, action: str) -> Additive:
    return Additive(Sum(action, resource=resource), f"no {resource.replace('_', ' ')} recorded")


# Metrics that tell machines apart (a site's, a device's): computed from cells that keep
# sites and devices, never from a city's own cubes (`queries.cell_groups`).
BY_MACHINE = frozenset({"utilization"})


def utilization(cells: Sequence[Cell], ctx: WindowFacts) -> Value:
    """Machine hours / (machines that reported use × hours in the window)."""
    used = _select(cells, lambda c: c.action == "use" and c.resource == "machine_hours")
    machines = {(c.site, c.device) for c in used}
    if not machines:
        return missing("no machine hours recorded")
    return Value(_sum(used) / (len(machines) * ctx.hours), weakest(c.state for c in used))


def reporting_coverage(_: Sequence[Cell], ctx: WindowFacts) -> Value:
    if ctx.sites_active == 0:
        return missing("no sites registered")
    return Value(ctx.sites_reporting / ctx.sites_active, "measured")


# Material flow accounts (EW-MFA at the city boundary) ---------------------------------------


def de(cells: Sequence[Cell], _: WindowFacts) -> Value:
    """Domestic extraction: inputs from the site or the city that are not recycled."""
    found = [c for c in _mfa(inputs(cells)) if c.ring in LOCAL and not c.recycled]
    return _accounted(found, cells)


def imp(cells: Sequence[Cell], _: WindowFacts) -> Value:
    return _accounted([c for c in _mfa(inputs(cells)) if c.ring in OUTSIDE], cells)


def exp(cells: Sequence[Cell], _: WindowFacts) -> Value:
    """Exports: things made, repaired or thrown away that left the city, by mass."""
    out = _select(
        cells, lambda c: c.action in ("produce", "modify", "discard") and c.ring in OUTSIDE
    )
    weighed = [c for c in out if c.dimension == "mass"]
    modelled = [c for c in out if c.dimension == "count" and c.design_mass_flows]
    if not weighed and not modelled and not _recorded(cells):
        return missing("no material flows recorded")
    value = _sum(weighed) + sum(c.design_mass for c in modelled) / MICRO
    state = weakest([c.state for c in weighed] + ["modelled"] * bool(modelled))
    # Nothing left the city: 0 is as sure as the flows that say so.
    return Value(value, state or weakest(c.state for c in cells if c.dimension == "mass"))


def _recorded(cells: Sequence[Cell]) -> bool:
    return any(c.dimension == "mass" for c in cells)


def _accounted(found: list[Cell], cells: Sequence[Cell]) -> Value:
    """A sum of the accounts: 0 is a real answer once the window holds any mass flows."""
    if not found and not _recorded(cells):
        return missing("no material flows recorded")
    return Value(_sum(found), weakest(c.state for c in found) or weakest(c.state for c in cells))


def _combine(
    parts: Sequence[tuple[Value, int]], reason: str = "no material flows recorded"
) -> Value:
    if any(v.value is None for v, _ in parts):
        return missing(reason)
    return Value(
        sum(sign * (v.value or 0) for v, sign in parts), weakest(v.state for v, _ in parts)
    )


def dmi(cells: Sequence[Cell], ctx: WindowFacts) -> Value:
    return _combine([(de(cells, ctx), 1), (imp(cells, ctx), 1)])


def dmc(cells: Sequence[Cell], ctx: WindowFacts) -> Value:
    return _combine([(de(cells, ctx), 1), (imp(cells, ctx), 1), (exp(cells, ctx), -1)])


def ptb(cells: Sequence[Cell], ctx: WindowFacts) -> Value:
    return _combine([(imp(cells, ctx), 1), (exp(cells, ctx), -1)])


def _per_person(metric: Callable[[Sequence[Cell], WindowFacts], Value]) -> Callable[..., Value]:
    def per_person(cells: Sequence[Cell], ctx: WindowFacts) -> Value:
        total = metric(cells, ctx)
        if total.value is None:
            return total
        if not ctx.population:
            return missing("the city's population is not recorded")
        return Value(total.value / ctx.population, total.state)

    return per_person


def u(cells: Sequence[Cell], _: WindowFacts) -> Value:
    """Waste made into secondary material in the city."""
    found = _select(cells, lambda c: c.action == "recover" and c.dimension == "mass")
    return _accounted(found, cells)


def cmu(cells: Sequence[Cell], ctx: WindowFacts) -> Value:
    """Circular material use rate: U / (DMC + U)."""
    recovered, consumed = u(cells, ctx), dmc(cells, ctx)
    if recovered.value is None or consumed.value is None:
        return missing("needs DMC and U")
    return _ratio(
        recovered.value,
        consumed.value + recovered.value,
        (recovered.state, consumed.state),
        "DMC + U is 0",
    )


# Fab City Index ---------------------------------------------------------------------------


def pito(cells: Sequence[Cell], _: WindowFacts) -> Value:
    """(inputs from beyond + waste landfilled or burnt) / (all inputs + all waste)."""
    ins, waste = inputs(cells), _waste(cells)
    linear = _sum(c for c in ins if c.ring == "beyond") + _sum(
        c for c in waste if c.fate in LINEAR_FATES
    )
    whole = _sum(ins) + _sum(waste)
    return _ratio(linear, whole, (c.state for c in [*ins, *waste]), "no inputs or waste recorded")


DIDO_TERMS = ("open_design_share", "local_input_share", "diversion_rate", "reporting_coverage")
NO_EVENTS = "no events in this window"


def dido(cells: Sequence[Cell], ctx: WindowFacts) -> Value:
    """The mean of the recorded terms; `modelled` when some are not recorded, and then with
    the range of the mean with the missing terms at 0 and at 1: absence is neither.

    A window without events has no DIDO: its one recorded term would be a reporting coverage
    of 0, and a mean of that alone reads as a city that makes nothing locally."""
    if not ctx.events:
        return missing(NO_EVENTS)
    values = {name: METRICS[name].compute(cells, ctx) for name in DIDO_TERMS}
    recorded = {n: v.value for n, v in values.items() if v.value is not None}
    if not recorded:
        return missing("none of its terms is recorded")
    total = sum(recorded.values())
    state = weakest(values[n].state for n in recorded)
    unrecorded = len(DIDO_TERMS) - len(recorded)
    if not unrecorded:
        return Value(total / len(recorded), state, terms=tuple(recorded))
    span = (total / len(DIDO_TERMS), (total + unrecorded) / len(DIDO_TERMS))
    return Value(total / len(recorded), "modelled", terms=tuple(recorded), range=span)


def fci(cells: Sequence[Cell], ctx: WindowFacts) -> Value:
    """DIDO × (1 − PITO). DIDO's range, when it has one, times (1 − PITO); with PITO not
    recorded no single number, only the range [0, DIDO] (DIDO's upper bound if it has one)."""
    d = dido(cells, ctx)
    if d.value is None:
        return Value(None, None, d.reason if d.reason == NO_EVENTS else "DIDO is not recorded")
    p = pito(cells, ctx)
    if p.value is None:
        top = d.range[1] if d.range is not None else d.value
        return Value(
            None,
            "modelled",
            "PITO is not recorded: FCI lies in the range",
            terms=d.terms,
            range=(0.0, top),
        )
    keep = 1 - p.value
    span = (d.range[0] * keep, d.range[1] * keep) if d.range is not None else None
    return Value(d.value * keep, weakest((d.state, p.state)), terms=d.terms, range=span)


# Confidence ---------------------------------------------------------------------------------
#
# METRICS.md, "Confidence": how far a figure can be trusted as a picture of the city, from
# what stands behind it: the window's events and the share of active sites that reported.
LOW_EVENTS = 10  # fewer events than this: low
HIGH_EVENTS = 30  # at least this many (and the rest): high
LOW_SITE_SHARE = 0.5  # fewer than half of the active sites reporting: low
HIGH_SITE_SHARE = 0.8


def confidence(value: Value, ctx: WindowFacts) -> Confidence | None:
    """`low`, `medium` or `high` for a value of a window; None for a value not recorded (with
    neither a number nor a range there is nothing to trust or doubt)."""
    if value.value is None and value.range is None:
        return None
    # Compared as integers: 4 of 5 sites is 80 % exactly, whatever 4 / 5 is in binary.
    reporting, active = ctx.sites_reporting, ctx.sites_active
    if ctx.partial or ctx.events < LOW_EVENTS or reporting * 2 < active or not active:
        return "low"
    # A range (DIDO or FCI with terms not recorded) is never high: part of it is unknown.
    if ctx.events >= HIGH_EVENTS and reporting * 5 >= active * 4 and value.range is None:
        return "high"
    return "medium"


def assess(value: Value, ctx: WindowFacts) -> Value:
    """The value with its confidence."""
    return replace(value, confidence=confidence(value, ctx))


@dataclass(frozen=True)
class Metric:
    unit: str
    compute: Callable[[Sequence[Cell], WindowFacts], Value]
    description: str
    tags: tuple[str, ...] = field(default=())


WASTE_KG = Additive(WASTE, "no waste recorded")

METRICS: dict[str, Metric] = {
    "input_kg": Metric(
        "kg", Additive(INPUTS, "no inputs recorded"), "Σ inputs (consume flows of mass resources)"
    ),
    "local_input_share": Metric(
        "ratio",
        _share(INPUTS, "no inputs recorded", ring=LOCAL),
        "inputs from site or city / inputs",
    ),
    "regional_input_share": Metric(
        "ratio",
        _share(INPUTS, "no inputs recorded", ring=REGIONAL),
        "inputs from site, city or region / inputs",
    ),
    "recycled_input_share": Metric(
        "ratio", _share(INPUTS, "no inputs recorded", recycled=True), "recycled inputs / inputs"
    ),
    "produced_count": Metric(
        "count", Additive(MADE, "no production recorded"), "Σ produce of counted things"
    ),
    "produced_kg": Metric("kg", produced_kg, "Σ produce by mass; count × design mass modelled"),
    "repaired_count": Metric("count", Additive(Sum("modify"), "no repairs recorded"), "Σ modify"),
    "open_design_share": Metric(
        "ratio",
        _share(MADE, "no production recorded", design=OPEN_DESIGNS),
        "things made from an open design / things made",
    ),
    "designs_cited": Metric(
        "count", Additive(Sum("cite"), "no designs cited"), "Σ cite: designs taken in (data in)"
    ),
    "designs_published": Metric(
        "count",
        Additive(Sum("publish"), "no designs published"),
        "Σ publish: designs shared (data out)",
    ),
    "waste_kg": Metric("kg", WASTE_KG, "Σ discard by mass"),
    "waste_kg_per_person": Metric(
        "kg/person",
        _per_person(WASTE_KG),
        "waste_kg / population; over a year, comparable with official municipal waste per person",
    ),
    "diversion_rate": Metric(
        "ratio",
        _share(WASTE, "no waste recorded", fate=DIVERTED),
        "waste reused, recycled or composted / waste",
    ),
    "energy_kwh": Metric("kWh", ENERGY_KWH, "Σ electricity consumed"),
    "energy_per_kg": Metric("kWh/kg", energy_per_kg, "energy_kwh / produced_kg"),
    "local_energy_share": Metric(
        "ratio",
        _share(ELECTRICITY, "no electricity recorded", ring=LOCAL),
        "electricity from site or city / electricity",
    ),
    "work_hours": Metric("h", _hours_of("work_hours", "work"), "Σ work on work_hours"),
    "training_hours": Metric("h", _hours_of("training_hours", "work"), "Σ work on training_hours"),
    "machine_hours": Metric("h", _hours_of("machine_hours", "use"), "Σ use of machine_hours"),
    "utilization": Metric("ratio", utilization, "machine hours / (machines × hours)"),
    "reporting_coverage": Metric(
        "ratio", reporting_coverage, "sites with an event / sites registered"
    ),
    "de": Metric("kg", de, "domestic extraction: local inputs not recycled"),
    "imp": Metric("kg", imp, "imports: inputs from region or beyond"),
    "exp": Metric("kg", exp, "exports: made, repaired or discarded mass leaving the city"),
    "dmi": Metric("kg", dmi, "DE + IMP"),
    "dmc": Metric("kg", dmc, "DE + IMP − EXP"),
    "ptb": Metric("kg", ptb, "IMP − EXP"),
    "dmi_per_person": Metric("kg/person", _per_person(dmi), "DMI / population"),
    "dmc_per_person": Metric("kg/person", _per_person(dmc), "DMC / population"),
    "u": Metric("kg", u, "waste recovered into secondary material in the city"),
    "cmu": Metric("ratio", cmu, "U / (DMC + U)"),
    "pito": Metric("ratio", pito, "(inputs from beyond + landfill/incineration) / (inputs+waste)"),
    "dido": Metric("ratio", dido, "mean of the recorded DIDO terms"),
    "fci": Metric("ratio", fci, "DIDO × (1 − PITO)"),
}
DEFAULT_NAMES = ("input_kg", "local_input_share", "produced_count", "waste_kg")


def group_key(cell: Cell, group_by: GroupBy) -> str:
    if group_by == "site":
        return cell.site
    if group_by == "device":
        return cell.device or "(site reports)"
    if group_by == "resource":
        return cell.resource
    if group_by == "ring":
        return cell.ring
    return cell.mfa_category or "none"
