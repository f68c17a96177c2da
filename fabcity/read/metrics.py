"""The metrics, as pure functions of rollup cells (formulas: METRICS.md).

A cell is one row of a flow rollup. A metric over any window or breakdown is computed from the
cells inside it, so sums are added and ratios are taken of sums, never averaged. A value that
was not recorded is `None` with a reason, never 0.

Every metric reads its cells through the totals of a few classes of them (`Sum`: inputs from
outside the city, waste landfilled, ...): each formula is written once, of `Totals`, which
are added up from cells here (`CellTotals`) or in SQL by the series (`fabcity.read.series`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal, Protocol

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


@dataclass(slots=True)  # not frozen: a frozen dataclass is slow to make, and a series makes
class Value:  # tens of thousands (treated as immutable all the same)
    value: float | None
    state: str | None
    reason: str | None = None
    terms: tuple[str, ...] | None = None  # DIDO and FCI: the terms the value used
    # DIDO with unrecorded terms: the mean with them at 0 and at 1. FCI: follows from DIDO's,
    # or [0, DIDO] when PITO is not recorded (then `value` is None).
    range: tuple[float, float] | None = None
    confidence: Confidence | None = None  # set by `assess`, from the window's coverage


def missing(reason: str) -> Value:
    # One Value per reason, shared (Values are not changed once made): a long series by site
    # is mostly windows where some class has no cell, each of which made one.
    found = _MISSING.get(reason)
    if found is None:
        found = _MISSING[reason] = Value(None, None, reason)
    return found


_MISSING: dict[str, Value] = {}


def weakest(states: Iterable[str | None]) -> str | None:
    # A loop, not max() of a set: a long series takes the weakest of a few states some
    # hundred thousand times.
    found, rank = None, -1
    for s in states:
        if s is not None and (r := _STATE_RANK[s]) > rank:
            found, rank = s, r
    return found


def _select(cells: Sequence[Cell], test: Callable[[Cell], bool]) -> list[Cell]:
    return [c for c in cells if test(c)]


def _ratio(part: float, whole: float, states: Iterable[str | None], reason: str) -> Value:
    if whole <= 0:
        return missing(reason)
    return Value(part / whole, weakest(states))


# Cell classes ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # one class is one object: hashed by identity, in C
class Sum:
    """A class of cells whose amounts a metric adds up, by what they are: declared once, and
    tested on cells here and in SQL by the series (`fabcity.read.series`). `None`: any.

    Totals are looked up by class tens of thousands of times in a long series: the hash of
    the object itself is CPython's own, where a hash of the fields (even one kept, returned
    by a method) is a Python call on every lookup."""

    action: str | frozenset[str] | None
    dimension: str | None = None
    resource: str | None = None
    ring: frozenset[str] | None = None
    fate: frozenset[str] | None = None
    design: frozenset[str] | None = None
    recycled: bool | None = None
    mfa: bool | None = None  # the resource has an MFA category
    # The cells whose mass is modelled from designs (some flows of them are), adding up that
    # mass (`design_mass`) rather than their amount.
    modelled: bool = False

    def holds(self, c: Cell) -> bool:
        a = self.action
        return (
            (a is None or (c.action == a if isinstance(a, str) else c.action in a))
            and (self.dimension is None or c.dimension == self.dimension)
            and (self.resource is None or c.resource == self.resource)
            and (self.ring is None or c.ring in self.ring)
            and (self.fate is None or c.fate in self.fate)
            and (self.design is None or c.design in self.design)
            and (self.recycled is None or c.recycled == self.recycled)
            and (self.mfa is None or (c.mfa_category is not None) == self.mfa)
            and (not self.modelled or c.design_mass_flows > 0)
        )

    def measure(self, c: Cell) -> int:
        return c.design_mass if self.modelled else c.amount


class Totals(Protocol):
    """What the cells of a window (and group) add up to, class by class: a metric that needs
    no more (`FromTotals`) is computed from them, of cells here and of sums read in SQL by
    the series (`fabcity.read.series`), by the one formula. `memo` keeps the values already
    computed from them (DMC is a term of CMU, DIDO of FCI)."""

    memo: dict[object, Value]

    def amount(self, s: Sum) -> float:
        """Σ of the class, in the canonical unit (0 without a cell of it)."""
        ...

    def state(self, s: Sum) -> str | None:
        """The weakest state of the class's cells; None without a cell of it."""
        ...

    def machines(self, s: Sum) -> int:
        """How many machines (a site's device, or the site itself) the class's cells are of."""
        ...


class CellTotals:
    """`Totals` of a list of cells."""

    def __init__(self, cells: Sequence[Cell]) -> None:
        self.cells = cells
        self.memo: dict[object, Value] = {}
        self._of: dict[Sum, list[Cell]] = {}

    def _found(self, s: Sum) -> list[Cell]:
        found = self._of.get(s)
        if found is None:
            found = self._of[s] = [c for c in self.cells if s.holds(c)]
        return found

    def amount(self, s: Sum) -> float:
        return sum(s.measure(c) for c in self._found(s)) / MICRO

    def state(self, s: Sum) -> str | None:
        return weakest(c.state for c in self._found(s))

    def machines(self, s: Sum) -> int:
        return len({(c.site, c.device) for c in self._found(s)})


@dataclass(frozen=True, eq=False)  # one metric is one object: hashed by identity (`memo`)
class FromTotals:
    """A metric computed from the totals of some classes of cells (`needs`, every class its
    formula may read) and the window's facts."""

    needs: tuple[Sum, ...]
    formula: Callable[[Totals, WindowFacts], Value]
    counts: tuple[Sum, ...] = ()  # the classes whose machines it counts

    def __call__(self, cells: Sequence[Cell], ctx: WindowFacts) -> Value:
        return self.of(CellTotals(cells), ctx)

    def of(self, t: Totals, ctx: WindowFacts) -> Value:
        """Its value of `t` (computed once for all the metrics that use it)."""
        value = t.memo.get(self)
        if value is None:
            value = t.memo[self] = self.formula(t, ctx)
        return value


INPUTS = Sum("consume", dimension="mass")  # inputs: `consume` flows of mass resources
WASTE = Sum("discard", dimension="mass")
MADE = Sum("produce", dimension="count")
ELECTRICITY = Sum("consume", resource="electricity")
MASS = Sum(None, dimension="mass")  # every mass flow: has the window any material flows?
EVERYTHING = Sum(None)
# Things made from a design reference whose licence is open (or not yet registered, or not
# known: a design is not counted closed for a licence we could not read).
OPEN_DESIGNS = frozenset({"open", "unregistered", "unknown"})


def inputs(cells: Sequence[Cell]) -> list[Cell]:
    return _select(cells, INPUTS.holds)


@dataclass(frozen=True)
class Additive:
    """A metric that is the sum of one class of cells (`whole`), or the share of it that is
    also of `part`: what the series can add up per window in SQL, leaving Python the ratio."""

    whole: Sum
    reason: str  # why it is null: `whole` holds no cells (or, for a share, sums to 0)
    part: Sum | None = None  # a share: the cells of `whole` that are also of `part`

    def __call__(self, cells: Sequence[Cell], ctx: WindowFacts) -> Value:
        return self.of(CellTotals(cells), ctx)

    def of(self, t: Totals, _: WindowFacts) -> Value:
        state = t.state(self.whole)
        if state is None:
            return missing(self.reason)
        if self.part is None:
            return Value(t.amount(self.whole), state)
        return _ratio(t.amount(self.part), t.amount(self.whole), (state,), self.reason)

    @property
    def needs(self) -> tuple[Sum, ...]:
        return (self.whole,) if self.part is None else (self.whole, self.part)


def _share(whole: Sum, reason: str, **part: Any) -> Additive:
    """The share of `whole` that is also of `part` (a class of both: `whole` narrowed)."""
    return Additive(whole, reason, replace(whole, **part))


# Local production -------------------------------------------------------------------------


PRODUCED_MASS = Sum("produce", dimension="mass")
MADE_MODELLED = replace(MADE, modelled=True)


def _weighed_or_modelled(t: Totals, weighed: Sum, modelled: Sum) -> tuple[float, str | None]:
    """Mass weighed, plus mass modelled from designs (then at best `modelled`)."""
    states = [t.state(weighed)] + ["modelled"] * (t.state(modelled) is not None)
    return t.amount(weighed) + t.amount(modelled), weakest(states)


def _produced_kg(t: Totals, _: WindowFacts) -> Value:
    """Mass made: from mass flows, else count × the design's mass (then `modelled`)."""
    value, state = _weighed_or_modelled(t, PRODUCED_MASS, MADE_MODELLED)
    if state is None:
        return missing("no produced mass recorded, and no design mass to model it from")
    return Value(value, state)


produced_kg = FromTotals((PRODUCED_MASS, MADE_MODELLED), _produced_kg)
ENERGY_KWH = Additive(ELECTRICITY, "no electricity recorded")


def _energy_per_kg(t: Totals, ctx: WindowFacts) -> Value:
    energy, made = ENERGY_KWH.of(t, ctx), produced_kg.of(t, ctx)
    if energy.value is None or made.value is None:
        return missing("needs both energy_kwh and produced_kg")
    return _ratio(energy.value, made.value, (energy.state, made.state), "produced_kg is 0")


energy_per_kg = FromTotals((*ENERGY_KWH.needs, *produced_kg.needs), _energy_per_kg)


def _hours_of(whole: Sum) -> Additive:
    assert whole.resource is not None
    return Additive(whole, f"no {whole.resource.replace('_', ' ')} recorded")


MACHINE_HOURS = Sum("use", resource="machine_hours")


def _utilization(t: Totals, ctx: WindowFacts) -> Value:
    """Machine hours / (machines that reported use × hours in the window)."""
    machines = t.machines(MACHINE_HOURS)
    if not machines:
        return missing("no machine hours recorded")
    used = t.amount(MACHINE_HOURS)
    return Value(used / (machines * ctx.hours), t.state(MACHINE_HOURS))


utilization = FromTotals((MACHINE_HOURS,), _utilization, counts=(MACHINE_HOURS,))


def _reporting_coverage(_: Totals, ctx: WindowFacts) -> Value:
    if ctx.sites_active == 0:
        return missing("no sites registered")
    return Value(ctx.sites_reporting / ctx.sites_active, "measured")


reporting_coverage = FromTotals((), _reporting_coverage)


# Material flow accounts (EW-MFA at the city boundary) ---------------------------------------

DE = replace(INPUTS, mfa=True, ring=LOCAL, recycled=False)
IMP = replace(INPUTS, mfa=True, ring=OUTSIDE)
_LEAVING = frozenset({"produce", "modify", "discard"})
EXP_WEIGHED = Sum(_LEAVING, dimension="mass", ring=OUTSIDE)
EXP_MODELLED = Sum(_LEAVING, dimension="count", ring=OUTSIDE, modelled=True)
U = Sum("recover", dimension="mass")


def _accounted(s: Sum) -> FromTotals:
    """A sum of the accounts: 0 is a real answer once the window holds any mass flows."""

    def accounted(t: Totals, _: WindowFacts) -> Value:
        state = t.state(s)
        if state is None and t.state(MASS) is None:
            return missing("no material flows recorded")
        return Value(t.amount(s), state or t.state(EVERYTHING))

    return FromTotals((s, MASS, EVERYTHING), accounted)


# Domestic extraction: inputs from the site or the city that are not recycled.
de = _accounted(DE)
imp = _accounted(IMP)


def _exp(t: Totals, _: WindowFacts) -> Value:
    """Exports: things made, repaired or thrown away that left the city, by mass."""
    value, state = _weighed_or_modelled(t, EXP_WEIGHED, EXP_MODELLED)
    if state is None and t.state(MASS) is None:
        return missing("no material flows recorded")
    # Nothing left the city: 0 is as sure as the flows that say so.
    return Value(value, state or t.state(MASS))


exp = FromTotals((EXP_WEIGHED, EXP_MODELLED, MASS), _exp)


def _combine(
    parts: Sequence[tuple[Value, int]], reason: str = "no material flows recorded"
) -> Value:
    if any(v.value is None for v, _ in parts):
        return missing(reason)
    return Value(
        sum(sign * (v.value or 0) for v, sign in parts), weakest(v.state for v, _ in parts)
    )


def _accounts(*terms: tuple[FromTotals, int]) -> FromTotals:
    """A signed sum of accounts (DMI = DE + IMP, ...)."""

    def combined(t: Totals, ctx: WindowFacts) -> Value:
        return _combine([(m.of(t, ctx), sign) for m, sign in terms])

    return FromTotals(_needs(*(m for m, _ in terms)), combined)


def _needs(*of: FromTotals | Additive) -> tuple[Sum, ...]:
    return tuple(dict.fromkeys(s for m in of for s in m.needs))


dmi = _accounts((de, 1), (imp, 1))
dmc = _accounts((de, 1), (imp, 1), (exp, -1))
ptb = _accounts((imp, 1), (exp, -1))


def _per_person(metric: FromTotals | Additive) -> FromTotals:
    def per_person(t: Totals, ctx: WindowFacts) -> Value:
        total = metric.of(t, ctx)
        if total.value is None:
            return total
        if not ctx.population:
            return missing("the city's population is not recorded")
        return Value(total.value / ctx.population, total.state)

    return FromTotals(metric.needs, per_person)


u = _accounted(U)  # waste made into secondary material in the city


def _cmu(t: Totals, ctx: WindowFacts) -> Value:
    """Circular material use rate: U / (DMC + U)."""
    recovered, consumed = u.of(t, ctx), dmc.of(t, ctx)
    if recovered.value is None or consumed.value is None:
        return missing("needs DMC and U")
    return _ratio(
        recovered.value,
        consumed.value + recovered.value,
        (recovered.state, consumed.state),
        "DMC + U is 0",
    )


cmu = FromTotals(_needs(u, dmc), _cmu)


# Fab City Index ---------------------------------------------------------------------------


INPUTS_BEYOND = replace(INPUTS, ring=frozenset({"beyond"}))
WASTE_LINEAR = replace(WASTE, fate=LINEAR_FATES)


def _pito(t: Totals, _: WindowFacts) -> Value:
    """(inputs from beyond + waste landfilled or burnt) / (all inputs + all waste)."""
    linear = t.amount(INPUTS_BEYOND) + t.amount(WASTE_LINEAR)
    whole = t.amount(INPUTS) + t.amount(WASTE)
    states = (t.state(INPUTS), t.state(WASTE))
    return _ratio(linear, whole, states, "no inputs or waste recorded")


pito = FromTotals((INPUTS, WASTE, INPUTS_BEYOND, WASTE_LINEAR), _pito)

DIDO_TERMS = ("open_design_share", "local_input_share", "diversion_rate", "reporting_coverage")
NO_EVENTS = "no events in this window"
OPEN_DESIGN_SHARE = _share(MADE, "no production recorded", design=OPEN_DESIGNS)
LOCAL_INPUT_SHARE = _share(INPUTS, "no inputs recorded", ring=LOCAL)
DIVERSION_RATE = _share(WASTE, "no waste recorded", fate=DIVERTED)
_DIDO_TERMS: tuple[FromTotals | Additive, ...] = (
    OPEN_DESIGN_SHARE,
    LOCAL_INPUT_SHARE,
    DIVERSION_RATE,
    reporting_coverage,
)


def _dido(t: Totals, ctx: WindowFacts) -> Value:
    """The mean of the recorded terms; `modelled` when some are not recorded, and then with
    the range of the mean with the missing terms at 0 and at 1: absence is neither.

    A window without events has no DIDO: its one recorded term would be a reporting coverage
    of 0, and a mean of that alone reads as a city that makes nothing locally."""
    if not ctx.events:
        return missing(NO_EVENTS)
    recorded = [
        (name, v)
        for name, m in zip(DIDO_TERMS, _DIDO_TERMS, strict=True)
        if (v := m.of(t, ctx)).value is not None
    ]
    if not recorded:
        return missing("none of its terms is recorded")
    total = sum(v.value or 0 for _, v in recorded)
    terms = tuple(name for name, _ in recorded)
    unrecorded = len(DIDO_TERMS) - len(recorded)
    if not unrecorded:
        return Value(total / len(recorded), weakest(v.state for _, v in recorded), terms=terms)
    span = (total / len(DIDO_TERMS), (total + unrecorded) / len(DIDO_TERMS))
    return Value(total / len(recorded), "modelled", terms=terms, range=span)


dido = FromTotals(_needs(*_DIDO_TERMS), _dido)


def _fci(t: Totals, ctx: WindowFacts) -> Value:
    """DIDO × (1 − PITO). DIDO's range, when it has one, times (1 − PITO); with PITO not
    recorded no single number, only the range [0, DIDO] (DIDO's upper bound if it has one)."""
    d = dido.of(t, ctx)
    if d.value is None:
        return Value(None, None, d.reason if d.reason == NO_EVENTS else "DIDO is not recorded")
    p = pito.of(t, ctx)
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


fci = FromTotals(_needs(dido, pito), _fci)


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
    """The value with its confidence. (Made anew, not by `dataclasses.replace`: a year by day
    by site assesses 21,900 values, and `replace` cost 5 µs each.)"""
    v = value
    return Value(v.value, v.state, v.reason, v.terms, v.range, confidence(v, ctx))


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
    "local_input_share": Metric("ratio", LOCAL_INPUT_SHARE, "inputs from site or city / inputs"),
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
        "ratio", OPEN_DESIGN_SHARE, "things made from an open design / things made"
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
        "ratio", DIVERSION_RATE, "waste reused, recycled or composted / waste"
    ),
    "energy_kwh": Metric("kWh", ENERGY_KWH, "Σ electricity consumed"),
    "energy_per_kg": Metric("kWh/kg", energy_per_kg, "energy_kwh / produced_kg"),
    "local_energy_share": Metric(
        "ratio",
        _share(ELECTRICITY, "no electricity recorded", ring=LOCAL),
        "electricity from site or city / electricity",
    ),
    "work_hours": Metric(
        "h", _hours_of(Sum("work", resource="work_hours")), "Σ work on work_hours"
    ),
    "training_hours": Metric(
        "h", _hours_of(Sum("work", resource="training_hours")), "Σ work on training_hours"
    ),
    "machine_hours": Metric("h", _hours_of(MACHINE_HOURS), "Σ use of machine_hours"),
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
# Metrics that tell machines apart (a site's, a device's): computed from cells that keep
# sites and devices, never from a city's own cubes (`queries.cell_groups`).
BY_MACHINE = frozenset(
    n for n, m in METRICS.items() if isinstance(m.compute, FromTotals) and m.compute.counts
)
DEFAULT_NAMES = ("input_kg", "local_input_share", "produced_count", "waste_kg")


# A site's own reports (of no device), as a part of a breakdown by device.
SITE_REPORTS = "(site reports)"


def group_key(cell: Cell, group_by: GroupBy, one_site: bool = False) -> str:
    """The part of `group_by` a cell is of. A device's slug is its site's own (two sites may
    each have a "printer"): across a city's sites, a device's part is `site/device` and a
    site's own reports `site/(site reports)`; within `one_site`, the device's slug alone."""
    if group_by == "site":
        return cell.site
    if group_by == "device":
        device = cell.device or SITE_REPORTS
        return device if one_site else device_key(cell.site, device)
    if group_by == "resource":
        return cell.resource
    if group_by == "ring":
        return cell.ring
    return cell.mfa_category or "none"


def device_key(site: str, device: str) -> str:
    """A device's part of a city's breakdown by device (slugs hold no `/`)."""
    return f"{site}/{device}"
