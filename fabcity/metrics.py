"""The metrics, as pure functions of rollup cells (see METRICS.md for the formulas).

A cell is one row of the daily flow rollup. A metric over any window or breakdown is computed
from the cells inside it, so sums are added and ratios are taken of sums, never averaged.
A value that was not recorded is `None` with a reason, never 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

Interval = Literal["day", "week", "month", "year"]
GroupBy = Literal["site", "resource", "mfa_category", "ring"]

# The weakest state among a value's inputs is the value's state.
_STATE_RANK = {"measured": 0, "reported": 1, "modelled": 2}
LOCAL_RINGS = frozenset({"site", "city"})


@dataclass(frozen=True)
class Cell:
    day: date
    site: str
    action: str
    resource: str
    dimension: str
    mfa_category: str | None
    ring: str
    fate: str
    recycled: bool
    with_design: bool
    state: str
    quantity: float
    flows: int


@dataclass(frozen=True)
class Value:
    value: float | None
    state: str | None
    reason: str | None = None


def weakest_state(cells: Iterable[Cell]) -> str | None:
    states = {c.state for c in cells}
    return max(states, key=_STATE_RANK.__getitem__) if states else None


def _inputs(cells: Sequence[Cell]) -> list[Cell]:
    return [c for c in cells if c.action == "consume" and c.dimension == "mass"]


def _total(cells: Sequence[Cell], missing: str) -> Value:
    if not cells:
        return Value(None, None, missing)
    return Value(sum(c.quantity for c in cells), weakest_state(cells))


def input_kg(cells: Sequence[Cell]) -> Value:
    return _total(_inputs(cells), "no inputs recorded")


def local_input_share(cells: Sequence[Cell]) -> Value:
    inputs = _inputs(cells)
    total = sum(c.quantity for c in inputs)
    if total <= 0:
        return Value(None, None, "no inputs recorded")
    local = sum(c.quantity for c in inputs if c.ring in LOCAL_RINGS)
    return Value(local / total, weakest_state(inputs))


def produced_count(cells: Sequence[Cell]) -> Value:
    made = [c for c in cells if c.action == "produce" and c.dimension == "count"]
    return _total(made, "no production recorded")


def waste_kg(cells: Sequence[Cell]) -> Value:
    waste = [c for c in cells if c.action == "discard" and c.dimension == "mass"]
    return _total(waste, "no waste recorded")


@dataclass(frozen=True)
class Metric:
    unit: str
    compute: Callable[[Sequence[Cell]], Value]
    description: str


METRICS: dict[str, Metric] = {
    "input_kg": Metric("kg", input_kg, "Σ inputs (consume flows of mass resources)"),
    "local_input_share": Metric(
        "ratio", local_input_share, "inputs from site or city / all inputs"
    ),
    "produced_count": Metric("count", produced_count, "Σ produce flows of counted resources"),
    "waste_kg": Metric("kg", waste_kg, "Σ discard flows of mass resources"),
}


def group_key(cell: Cell, group_by: GroupBy) -> str:
    if group_by == "site":
        return cell.site
    if group_by == "resource":
        return cell.resource
    if group_by == "ring":
        return cell.ring
    return cell.mfa_category or "none"


def window_start(day: date, interval: Interval) -> date:
    """First day of the window holding `day` (weeks start on Monday, ISO 8601)."""
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def window_starts(first: date, last: date, interval: Interval) -> list[date]:
    """Starts of every window that overlaps [first, last]."""
    starts = []
    day = window_start(first, interval)
    while day <= last:
        starts.append(day)
        if interval == "day":
            day += timedelta(days=1)
        elif interval == "week":
            day += timedelta(days=7)
        elif interval == "month":
            day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            day = day.replace(year=day.year + 1)
    return starts
