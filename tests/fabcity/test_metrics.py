"""The metrics as pure functions of rollup cells, and the calendar windows they are read over.

Expected values are worked out by hand from the formulas in METRICS.md, not from the code.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, get_args

import pytest

from fabcity.metrics import (
    LOCAL_RINGS,
    METRICS,
    Cell,
    GroupBy,
    Interval,
    Value,
    group_key,
    input_kg,
    local_input_share,
    produced_count,
    waste_kg,
    weakest_state,
    window_start,
    window_starts,
)

DAY = date(2026, 3, 10)


def cell(
    action: str = "consume",
    resource: str = "filament",
    quantity: float = 1.0,
    *,
    dimension: str = "mass",
    ring: str = "city",
    state: str = "measured",
    **overrides: Any,
) -> Cell:
    fields: dict[str, Any] = {
        "day": DAY,
        "site": "lab",
        "action": action,
        "resource": resource,
        "dimension": dimension,
        "mfa_category": "MF4" if dimension == "mass" else None,
        "ring": ring,
        "fate": "",
        "recycled": False,
        "with_design": False,
        "state": state,
        "quantity": quantity,
        "flows": 1,
        **overrides,
    }
    return Cell(**fields)


def electricity(kwh: float, **overrides: Any) -> Cell:
    return cell("consume", "electricity", kwh, dimension="energy", **overrides)


def parts(count: float, action: str = "produce", **overrides: Any) -> Cell:
    return cell(action, "part", count, dimension="count", **overrides)


# input_kg ------------------------------------------------------------------------------------


def test_input_kg_sums_only_consume_flows_of_mass_resources() -> None:
    cells = [
        cell("consume", "filament", 2.0, ring="city"),
        cell("consume", "wood", 0.5, ring="beyond"),
        electricity(7.0),  # energy, not material
        cell("produce", "plastic", 4.0),  # an output, not an input
        cell("discard", "plastic", 0.25),  # waste, not an input
        parts(3, action="consume"),  # counted, no mass
    ]
    assert input_kg(cells) == Value(2.5, "measured")


def test_input_kg_without_inputs_is_none_with_a_reason_never_zero() -> None:
    only_other_flows = [electricity(3.0), cell("produce", "plastic", 1.0)]
    for cells in ([], only_other_flows):
        value = input_kg(cells)
        assert value.value is None
        assert value.state is None
        assert value.reason == "no inputs recorded"


def test_input_kg_of_recorded_zero_is_zero() -> None:
    # A recorded zero is a measurement, unlike a missing record.
    assert input_kg([cell(quantity=0.0)]) == Value(0.0, "measured")


# local_input_share ---------------------------------------------------------------------------


def test_local_rings_are_site_and_city() -> None:
    assert frozenset({"site", "city"}) == LOCAL_RINGS


def test_local_input_share_is_site_plus_city_over_all_inputs() -> None:
    cells = [
        cell(quantity=1.0, ring="site"),
        cell(quantity=2.0, ring="city"),
        cell(quantity=3.0, ring="region"),
        cell(quantity=4.0, ring="beyond"),
    ]
    # (1 + 2) / (1 + 2 + 3 + 4)
    assert local_input_share(cells) == Value(0.3, "measured")


def test_local_input_share_of_region_and_beyond_only_is_zero() -> None:
    cells = [cell(quantity=1.0, ring="region"), cell(quantity=2.0, ring="beyond")]
    assert local_input_share(cells) == Value(0.0, "measured")


def test_local_input_share_ignores_energy_and_outputs() -> None:
    cells = [
        cell(quantity=2.0, ring="city"),
        cell(quantity=1.0, ring="beyond"),
        electricity(100.0, ring="beyond"),  # would drag the share down if counted
        cell("produce", "plastic", 50.0, ring="site"),  # would push it up if counted
    ]
    value = local_input_share(cells)
    assert value.value == pytest.approx(2 / 3)
    assert value.state == "measured"


def test_local_input_share_is_a_ratio_of_sums_not_a_mean_of_ratios() -> None:
    # Day 1: 1 kg local of 1 (100 %); day 2: 1 kg local of 4 (25 %). Mean of ratios: 62.5 %;
    # ratio of sums: 2 / 5 = 40 %.
    cells = [
        cell(quantity=1.0, ring="city", day=date(2026, 3, 1)),
        cell(quantity=1.0, ring="city", day=date(2026, 3, 2)),
        cell(quantity=3.0, ring="beyond", day=date(2026, 3, 2)),
    ]
    assert local_input_share(cells).value == pytest.approx(0.4)


@pytest.mark.parametrize(
    "cells",
    [[], [electricity(1.0)], [cell(quantity=0.0, ring="city")]],
    ids=["nothing", "no-mass-inputs", "zero-kg-inputs"],
)
def test_local_input_share_without_inputs_is_none_with_a_reason(cells: list[Cell]) -> None:
    # 0/0 is not a share: reporting 0 would say "nothing local" when nothing was recorded.
    value = local_input_share(cells)
    assert value == Value(None, None, "no inputs recorded")


# produced_count and waste_kg -----------------------------------------------------------------


def test_produced_count_counts_only_produce_flows_of_count_resources() -> None:
    cells = [
        parts(3),
        cell("produce", "furniture", 2, dimension="count"),
        parts(5, action="consume"),  # parts used up, not made
        cell("produce", "plastic", 9.0),  # made, but in kg
        cell("produce", "machine_hours", 4.0, dimension="time"),
    ]
    assert produced_count(cells) == Value(5.0, "measured")


def test_produced_count_without_production_is_none() -> None:
    assert produced_count([cell()]) == Value(None, None, "no production recorded")


def test_waste_kg_sums_discard_flows_of_mass_resources() -> None:
    cells = [
        cell("discard", "plastic", 0.5, fate="recycle"),
        cell("discard", "wood", 1.25, fate="landfill"),
        parts(2, action="discard"),  # no mass
        cell("consume", "plastic", 10.0),
        cell("recover", "plastic", 3.0),
    ]
    assert waste_kg(cells) == Value(1.75, "measured")


def test_waste_kg_without_discards_is_none() -> None:
    assert waste_kg([cell()]) == Value(None, None, "no waste recorded")


# States --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "weakest"),
    [
        (["measured"], "measured"),
        (["measured", "measured"], "measured"),
        (["measured", "reported"], "reported"),
        (["reported", "measured"], "reported"),
        (["measured", "modelled"], "modelled"),
        (["reported", "modelled", "measured"], "modelled"),
    ],
)
def test_a_value_has_the_weakest_state_of_its_inputs(states: list[str], weakest: str) -> None:
    cells = [cell(state=s, ring="city" if i % 2 else "beyond") for i, s in enumerate(states)]
    assert weakest_state(cells) == weakest
    assert input_kg(cells).state == weakest
    assert local_input_share(cells).state == weakest


def test_weakest_state_of_nothing_is_none() -> None:
    assert weakest_state([]) is None


def test_state_comes_only_from_the_cells_the_metric_uses() -> None:
    # A modelled energy figure must not weaken a measured mass input.
    cells = [cell(state="measured"), electricity(1.0, state="modelled")]
    assert input_kg(cells).state == "measured"
    assert local_input_share(cells).state == "measured"


def test_registry_of_metrics_units() -> None:
    assert {name: m.unit for name, m in METRICS.items()} == {
        "input_kg": "kg",
        "local_input_share": "ratio",
        "produced_count": "count",
        "waste_kg": "kg",
    }
    assert METRICS["local_input_share"].compute is local_input_share


# Windows -------------------------------------------------------------------------------------


def test_day_window_is_the_day() -> None:
    assert window_start(DAY, "day") == DAY


@pytest.mark.parametrize(
    ("day", "monday"),
    [
        (date(2026, 3, 9), date(2026, 3, 9)),  # a Monday is its own start
        (date(2026, 3, 10), date(2026, 3, 9)),
        (date(2026, 3, 15), date(2026, 3, 9)),  # Sunday belongs to the week before it
        (date(2026, 3, 16), date(2026, 3, 16)),
        (date(2026, 1, 1), date(2025, 12, 29)),  # a week across the new year
    ],
)
def test_week_starts_on_the_iso_monday(day: date, monday: date) -> None:
    start = window_start(day, "week")
    assert start == monday
    assert start.isoweekday() == 1
    assert start.isocalendar()[:2] == day.isocalendar()[:2]


@pytest.mark.parametrize(
    ("day", "first"),
    [
        (date(2026, 3, 10), date(2026, 3, 1)),
        (date(2026, 3, 1), date(2026, 3, 1)),
        (date(2024, 2, 29), date(2024, 2, 1)),
        (date(2026, 12, 31), date(2026, 12, 1)),
    ],
)
def test_month_starts_on_the_first(day: date, first: date) -> None:
    assert window_start(day, "month") == first


def test_year_starts_on_the_first_of_january() -> None:
    assert window_start(date(2026, 12, 31), "year") == date(2026, 1, 1)
    assert window_start(date(2024, 2, 29), "year") == date(2024, 1, 1)


def test_day_window_starts_cover_every_day_inclusive() -> None:
    assert window_starts(date(2026, 2, 27), date(2026, 3, 2), "day") == [
        date(2026, 2, 27),
        date(2026, 2, 28),
        date(2026, 3, 1),
        date(2026, 3, 2),
    ]


def test_a_single_day_range_is_one_window() -> None:
    assert window_starts(DAY, DAY, "day") == [DAY]


def test_week_window_starts_begin_on_the_monday_before_the_first_day() -> None:
    # 2026-03-11 is a Wednesday; 2026-03-23 a Monday, so it opens a third window.
    assert window_starts(date(2026, 3, 11), date(2026, 3, 23), "week") == [
        date(2026, 3, 9),
        date(2026, 3, 16),
        date(2026, 3, 23),
    ]


def test_month_window_starts_roll_over_december_into_january() -> None:
    assert window_starts(date(2025, 11, 15), date(2026, 2, 1), "month") == [
        date(2025, 11, 1),
        date(2025, 12, 1),
        date(2026, 1, 1),
        date(2026, 2, 1),
    ]


@pytest.mark.parametrize("year", [2024, 2028])
def test_month_window_starts_step_over_a_leap_february(year: int) -> None:
    assert window_starts(date(year, 1, 31), date(year, 4, 1), "month") == [
        date(year, 1, 1),
        date(year, 2, 1),
        date(year, 3, 1),
        date(year, 4, 1),
    ]


def test_month_window_starts_over_a_whole_year_are_twelve_firsts() -> None:
    starts = window_starts(date(2026, 1, 31), date(2026, 12, 31), "month")
    assert starts == [date(2026, m, 1) for m in range(1, 13)]


def test_year_window_starts() -> None:
    assert window_starts(date(2023, 6, 1), date(2025, 1, 1), "year") == [
        date(2023, 1, 1),
        date(2024, 1, 1),
        date(2025, 1, 1),
    ]


def test_year_window_starts_from_a_leap_day() -> None:
    # Stepping the year of Feb 29 would fail; the window start is Jan 1, so it must not.
    assert window_starts(date(2024, 2, 29), date(2025, 3, 1), "year") == [
        date(2024, 1, 1),
        date(2025, 1, 1),
    ]


@pytest.mark.parametrize("interval", get_args(Interval))
def test_every_day_falls_in_exactly_one_listed_window(interval: Interval) -> None:
    first, last = date(2023, 12, 20), date(2024, 3, 5)
    starts = window_starts(first, last, interval)
    assert starts == sorted(set(starts))
    day = first
    while day <= last:
        assert window_start(day, interval) in starts
        day += timedelta(days=1)
    # No window lies wholly outside the range.
    assert starts[0] <= first
    assert all(s <= last for s in starts)


def test_windows_of_an_empty_range_are_none() -> None:
    assert window_starts(date(2026, 3, 2), date(2026, 3, 1), "day") == []


# group_key -----------------------------------------------------------------------------------


def test_group_key_for_each_grouping() -> None:
    c = cell(site="hub", resource="wood", ring="region", mfa_category="MF1")
    keys: dict[GroupBy, str] = {
        "site": "hub",
        "resource": "wood",
        "ring": "region",
        "mfa_category": "MF1",
    }
    assert set(keys) == set(get_args(GroupBy))
    for group_by, key in keys.items():
        assert group_key(c, group_by) == key


def test_group_key_of_a_resource_without_mfa_category_is_none_as_text() -> None:
    assert group_key(electricity(1.0), "mfa_category") == "none"
