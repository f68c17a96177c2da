"""The metrics as pure functions of rollup cells: one class per metric, or family of metrics.

Expected values are worked out by hand from the formulas in METRICS.md, not from the code.
Amounts in cells are integers in millionths of the canonical unit (kg, kWh, count, h).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import date
from typing import Any, get_args

import pytest

from fabcity.read.metrics import (
    DIDO_TERMS,
    METRICS,
    Additive,
    Cell,
    FromTotals,
    GroupBy,
    Sum,
    Value,
    WindowFacts,
    confidence,
    group_key,
    weakest,
)

DAY = date(2026, 3, 10)

# resource -> (dimension, EW-MFA category), as in the default registry.
RESOURCES: dict[str, tuple[str, str | None]] = {
    "filament": ("mass", "MF4"),
    "plastic": ("mass", "MF4"),
    "recycled_plastic": ("mass", "MF4"),
    "wood": ("mass", "MF1"),
    "food": ("mass", "MF1"),
    "metal": ("mass", "MF2"),
    "glass": ("mass", "MF3"),
    "electricity": ("energy", None),
    "water": ("volume", None),
    "part": ("count", None),
    "furniture": ("count", None),
    "design": ("count", None),
    "machine_hours": ("time", None),
    "work_hours": ("time", None),
    "training_hours": ("time", None),
}


def cell(
    action: str = "consume",
    resource: str = "filament",
    amount: float = 1.0,
    *,
    ring: str = "city",
    state: str = "measured",
    each_kg: float | None = None,
    **overrides: Any,
) -> Cell:
    """One rollup row; `amount` in the canonical unit, `each_kg` a design's mass per thing."""
    dimension, category = RESOURCES[resource]
    micro = round(amount * 1_000_000)
    fields: dict[str, Any] = {
        "start": DAY,
        "site": "lab",
        "device": "",
        "action": action,
        "resource": resource,
        "dimension": dimension,
        "mfa_category": category,
        "ring": ring,
        "fate": "",
        "recycled": False,
        "design": "",
        "state": state,
        "amount": micro,
        "design_mass": 0 if each_kg is None else round(amount * each_kg * 1_000_000),
        "design_mass_flows": 0 if each_kg is None else 1,
        "flows": 1,
        **overrides,
    }
    return Cell(**fields)


def inp(kg: float, ring: str = "city", resource: str = "filament", **overrides: Any) -> Cell:
    return cell("consume", resource, kg, ring=ring, **overrides)


def waste(kg: float, fate: str, resource: str = "plastic", **overrides: Any) -> Cell:
    return cell("discard", resource, kg, fate=fate, **overrides)


def power(kwh: float, ring: str = "region", **overrides: Any) -> Cell:
    return cell("consume", "electricity", kwh, ring=ring, **overrides)


def parts(count: float, action: str = "produce", **overrides: Any) -> Cell:
    return cell(action, "part", count, **overrides)


def machine(hours: float, device: str, site: str = "lab", **overrides: Any) -> Cell:
    return cell("use", "machine_hours", hours, ring="site", device=device, site=site, **overrides)


def ctx(
    hours: float = 24.0,
    sites_active: int = 4,
    sites_reporting: int = 3,
    events: int = 10,
    population: int | None = None,
) -> WindowFacts:
    return WindowFacts(hours, sites_active, sites_reporting, events, population)


def compute(name: str, cells: Sequence[Cell], context: WindowFacts | None = None) -> Value:
    return METRICS[name].compute(cells, context or ctx())


def assert_value(actual: Value, value: float, state: str) -> None:
    assert actual.value == pytest.approx(value, rel=1e-12, abs=1e-12)
    assert actual.state == state
    assert actual.reason is None


def assert_missing(actual: Value, reason_part: str = "") -> None:
    """Not recorded: `None` with a reason, never 0."""
    assert actual.value is None
    assert actual.state is None
    assert actual.reason
    assert reason_part in actual.reason


# One city-day with every kind of flow; every metric of it worked out by hand --------------


def a_day_at_the_lab() -> list[Cell]:
    return [
        # Inputs: 20 kg, of which site + city 6, region 4, beyond 10, recycled 1.
        inp(2.0, "site", device="printer"),
        inp(3.0, "city", "wood"),
        inp(1.0, "city", "recycled_plastic", recycled=True),
        inp(4.0, "region", "metal"),
        inp(10.0, "beyond"),
        # Electricity: 24 kWh, 6 of them from the roof.
        power(6.0, "site"),
        power(18.0, "region"),
        # Made: 10 parts (6 from an open design of 0.5 kg each), and 1 kg of pellets sold.
        parts(6, design="open", each_kg=0.5),
        parts(2, design="closed", ring="beyond"),
        parts(2),
        cell("produce", "plastic", 1.0, ring="beyond"),
        cell("modify", "furniture", 3),
        cell("cite", "design", 4),
        cell("publish", "design", 1),
        # Waste: 10 kg, 4 diverted; 4 kg to a regional landfill; 2 kg burnt.
        waste(2.0, "recycle"),
        waste(1.0, "compost", "wood"),
        waste(4.0, "landfill", ring="region"),
        waste(1.0, "reuse", "wood"),
        waste(2.0, "incineration", "metal"),
        cell("recover", "plastic", 1.5),
        cell("work", "work_hours", 8.0, ring="site"),
        cell("work", "training_hours", 3.0, ring="site"),
        machine(6.0, "printer"),
        machine(3.0, "laser"),
        machine(3.0, "printer", site="hub"),
    ]


DAY_CONTEXT = ctx(hours=24.0, sites_active=4, sites_reporting=3, population=2000)


# name -> (value, state), by hand from METRICS.md.
A_DAY: dict[str, tuple[float, str]] = {
    "input_kg": (20.0, "measured"),  # 2 + 3 + 1 + 4 + 10
    "local_input_share": (0.3, "measured"),  # (2 + 3 + 1) / 20
    "regional_input_share": (0.5, "measured"),  # (6 + 4) / 20
    "recycled_input_share": (0.05, "measured"),  # 1 / 20
    "produced_count": (10.0, "measured"),  # 6 + 2 + 2
    "produced_kg": (4.0, "modelled"),  # 1 kg weighed + 6 × 0.5 kg from the design
    "repaired_count": (3.0, "measured"),
    "open_design_share": (0.6, "measured"),  # 6 / 10
    "designs_cited": (4.0, "measured"),
    "designs_published": (1.0, "measured"),
    "waste_kg": (10.0, "measured"),  # 2 + 1 + 4 + 1 + 2
    "diversion_rate": (0.4, "measured"),  # (recycle 2 + compost 1 + reuse 1) / 10
    "energy_kwh": (24.0, "measured"),
    "energy_per_kg": (6.0, "modelled"),  # 24 kWh / 4 kg
    "local_energy_share": (0.25, "measured"),  # 6 / 24
    "work_hours": (8.0, "measured"),
    "training_hours": (3.0, "measured"),
    "machine_hours": (12.0, "measured"),  # 6 + 3 + 3
    "utilization": (12 / 72, "measured"),  # 12 h / (3 machines × 24 h)
    "reporting_coverage": (0.75, "measured"),  # 3 of 4 sites
    "de": (5.0, "measured"),  # site 2 + city 3; the recycled 1 kg is not extraction
    "imp": (14.0, "measured"),  # region 4 + beyond 10
    "exp": (5.0, "measured"),  # pellets to beyond 1 + waste to the region 4
    "dmi": (19.0, "measured"),  # 5 + 14
    "dmc": (14.0, "measured"),  # 5 + 14 − 5
    "ptb": (9.0, "measured"),  # 14 − 5
    "dmi_per_person": (0.0095, "measured"),  # 19 / 2000
    "dmc_per_person": (0.007, "measured"),  # 14 / 2000
    "waste_kg_per_person": (0.005, "measured"),  # 10 / 2000
    "u": (1.5, "measured"),
    "cmu": (1.5 / 15.5, "measured"),  # U / (DMC + U) = 1.5 / 15.5
    "pito": (16 / 30, "measured"),  # (beyond 10 + landfill 4 + incineration 2) / (20 + 10)
    "dido": (0.5125, "measured"),  # (0.6 + 0.3 + 0.4 + 0.75) / 4
    "fci": (0.5125 * 14 / 30, "measured"),  # DIDO × (1 − 16/30)
}


class TestMetricRegistry:
    """Every metric: its unit, its value on a day worked out by hand, and on nothing."""

    def test_every_metric_has_a_hand_computed_expectation(self) -> None:
        assert set(A_DAY) == set(METRICS)

    @pytest.mark.parametrize("name", list(A_DAY))
    def test_every_metric_of_a_day_at_the_lab(self, name: str) -> None:
        value, state = A_DAY[name]
        assert_value(compute(name, a_day_at_the_lab(), DAY_CONTEXT), value, state)

    @pytest.mark.parametrize("name", list(A_DAY))
    def test_every_metric_of_nothing_recorded_is_none_with_a_reason(self, name: str) -> None:
        # 0 would claim "nothing local", "no waste diverted"... when nothing was recorded at all.
        nothing = ctx(sites_active=0, sites_reporting=0, events=0, population=None)
        assert_missing(compute(name, [], nothing))

    def test_registry_of_metric_units(self) -> None:
        units = {name: m.unit for name, m in METRICS.items()}
        assert {n for n, u in units.items() if u == "ratio"} == {
            "local_input_share",
            "regional_input_share",
            "recycled_input_share",
            "open_design_share",
            "diversion_rate",
            "local_energy_share",
            "utilization",
            "reporting_coverage",
            "cmu",
            "pito",
            "dido",
            "fci",
        }
        assert units["input_kg"] == units["dmc"] == units["u"] == "kg"
        assert units["energy_kwh"] == "kWh"
        assert units["energy_per_kg"] == "kWh/kg"
        assert units["dmc_per_person"] == "kg/person"
        assert units["work_hours"] == units["machine_hours"] == "h"
        assert units["produced_count"] == units["designs_cited"] == "count"


class TestWeakest:
    """`weakest`: the state of a value is the weakest of the states it was made from."""

    @pytest.mark.parametrize(
        ("states", "expected"),
        [
            ([], None),
            ([None], None),
            (["measured"], "measured"),
            (["measured", "measured"], "measured"),
            (["measured", "reported"], "reported"),
            (["reported", "measured"], "reported"),
            (["measured", "modelled"], "modelled"),
            (["reported", "modelled", "measured"], "modelled"),
            ([None, "reported", "measured"], "reported"),
        ],
    )
    def test_weakest_state(self, states: list[str | None], expected: str | None) -> None:
        assert weakest(states) == expected


class TestValueStates:
    """The state a metric's value carries, taken from the cells that metric reads."""

    @pytest.mark.parametrize(
        "name", ["input_kg", "local_input_share", "regional_input_share", "recycled_input_share"]
    )
    def test_a_value_has_the_weakest_state_of_its_inputs(self, name: str) -> None:
        cells = [inp(1.0, "city"), inp(1.0, "beyond", state="reported")]
        assert compute(name, cells).state == "reported"
        assert compute(name, [*cells, inp(1.0, state="modelled")]).state == "modelled"

    def test_state_comes_only_from_the_cells_the_metric_uses(self) -> None:
        # A modelled energy figure or a reported waste must not weaken a measured mass input.
        cells = [inp(1.0), power(1.0, state="modelled"), waste(1.0, "landfill", state="reported")]
        assert compute("input_kg", cells).state == "measured"
        assert compute("local_input_share", cells).state == "measured"
        assert compute("energy_kwh", cells).state == "modelled"
        assert compute("waste_kg", cells).state == "reported"


class TestInputKg:
    """input_kg: the mass consumed, and the millionths its cells hold."""

    def test_input_kg_sums_only_consume_flows_of_mass_resources(self) -> None:
        cells = [
            inp(2.0, "city"),
            inp(0.5, "beyond", "wood"),
            power(7.0),  # energy, not material
            cell("consume", "water", 3.0),  # volume, not mass
            cell("produce", "plastic", 4.0),  # an output, not an input
            waste(0.25, "recycle"),  # waste, not an input
            cell("recover", "plastic", 1.0),  # secondary material made, not consumed
            parts(3, action="consume"),  # counted, no mass
        ]
        assert_value(compute("input_kg", cells), 2.5, "measured")

    def test_input_kg_without_inputs_is_none_with_a_reason_never_zero(self) -> None:
        for cells in ([], [power(3.0), cell("produce", "plastic", 1.0)]):
            assert compute("input_kg", cells) == Value(None, None, "no inputs recorded")

    def test_input_kg_of_a_recorded_zero_is_zero(self) -> None:
        # A recorded zero is a measurement, unlike a missing record.
        assert compute("input_kg", [inp(0.0)]) == Value(0.0, "measured")

    def test_amounts_are_millionths_of_the_canonical_unit(self) -> None:
        one_milligram = replace(inp(0.0), amount=1)
        assert compute("input_kg", [one_milligram]).value == pytest.approx(0.000_001)
        assert compute("input_kg", [replace(inp(0.0), amount=2_500_000)]).value == 2.5


SHARE_CELLS = [
    inp(1.0, "site"),
    inp(2.0, "city"),
    inp(3.0, "region", "recycled_plastic", recycled=True),
    inp(4.0, "beyond", recycled=True),
    power(100.0, "beyond"),  # would drag every share down if counted
    cell("produce", "plastic", 50.0, ring="site"),  # would push the local share up
    cell("recover", "plastic", 9.0, ring="city", recycled=True),  # not an input
]


class TestInputShares:
    """local_input_share, regional_input_share, recycled_input_share."""

    @pytest.mark.parametrize(
        ("name", "share"),
        [
            ("local_input_share", 0.3),  # (site 1 + city 2) / 10
            ("regional_input_share", 0.6),  # (1 + 2 + region 3) / 10
            ("recycled_input_share", 0.7),  # (3 + 4) / 10
        ],
    )
    def test_input_shares(self, name: str, share: float) -> None:
        assert_value(compute(name, SHARE_CELLS), share, "measured")

    @pytest.mark.parametrize(
        "name", ["local_input_share", "regional_input_share", "recycled_input_share"]
    )
    @pytest.mark.parametrize(
        "cells",
        [[], [power(1.0)], [inp(0.0, "city")]],
        ids=["nothing", "no-mass-inputs", "zero-kg-inputs"],
    )
    def test_input_shares_without_inputs_are_none_with_a_reason(
        self, name: str, cells: list[Cell]
    ) -> None:
        # 0/0 is not a share.
        assert compute(name, cells) == Value(None, None, "no inputs recorded")

    def test_input_share_of_none_local_is_a_real_zero(self) -> None:
        cells = [inp(1.0, "region"), inp(2.0, "beyond")]
        assert compute("local_input_share", cells) == Value(0.0, "measured")


class TestProduction:
    """produced_count, produced_kg (weighed or modelled from designs), repaired_count."""

    def test_produced_count_counts_only_produce_flows_of_count_resources(self) -> None:
        cells = [
            parts(3),
            cell("produce", "furniture", 2),
            parts(5, action="consume"),  # parts used up, not made
            parts(1, action="modify"),  # repaired, not made
            cell("produce", "plastic", 9.0),  # made, but in kg
        ]
        assert_value(compute("produced_count", cells), 5.0, "measured")

    def test_produced_kg_from_mass_flows_keeps_their_state(self) -> None:
        cells = [cell("produce", "plastic", 1.5), cell("produce", "wood", 0.5, state="reported")]
        assert_value(compute("produced_kg", cells), 2.0, "reported")

    def test_produced_kg_from_count_times_design_mass_is_modelled(self) -> None:
        assert_value(compute("produced_kg", [parts(4, each_kg=0.25)]), 1.0, "modelled")

    def test_produced_kg_adds_weighed_mass_and_modelled_mass(self) -> None:
        cells = [
            cell("produce", "plastic", 1.5),
            parts(4, each_kg=0.25),  # 1 kg modelled
            parts(7),  # no design mass: adds nothing
            parts(2, action="modify", each_kg=3.0),  # repaired, not made
        ]
        assert_value(compute("produced_kg", cells), 2.5, "modelled")

    def test_produced_kg_ignores_counts_without_design_mass_and_stays_measured(self) -> None:
        assert_value(
            compute("produced_kg", [cell("produce", "plastic", 2.0), parts(3)]), 2.0, "measured"
        )

    def test_produced_kg_without_mass_or_design_mass_is_none_with_a_reason(self) -> None:
        assert_missing(compute("produced_kg", [parts(3)]), "design mass")
        assert_missing(compute("produced_kg", []), "design mass")

    def test_repaired_count_sums_modify(self) -> None:
        cells = [parts(2, action="modify"), cell("modify", "furniture", 1), parts(9)]
        assert_value(compute("repaired_count", cells), 3.0, "measured")
        assert compute("repaired_count", [parts(9)]) == Value(None, None, "no repairs recorded")


class TestDesigns:
    """open_design_share, designs_cited, designs_published."""

    def test_open_design_share_counts_open_and_unregistered_designs_not_closed(self) -> None:
        cells = [
            parts(2, design="open"),
            parts(1, design="unregistered"),  # a design reference not yet in the registry
            parts(3, design="closed"),
            parts(4),  # no design reference
            parts(5, action="cite", design="open"),  # cited, not made
        ]
        assert_value(compute("open_design_share", cells), 0.3, "measured")  # (2 + 1) / 10

    def test_open_design_share_without_production_is_none(self) -> None:
        assert compute("open_design_share", [inp(1.0)]) == Value(
            None, None, "no production recorded"
        )

    def test_designs_cited_and_published(self) -> None:
        cells = [
            cell("cite", "design", 3),
            cell("cite", "design", 2, state="reported"),
            cell("publish", "design", 1),
            parts(4),
        ]
        assert_value(compute("designs_cited", cells), 5.0, "reported")
        assert_value(compute("designs_published", cells), 1.0, "measured")
        assert compute("designs_published", [parts(1)]) == Value(None, None, "no designs published")
        assert compute("designs_cited", [parts(1)]) == Value(None, None, "no designs cited")


class TestWaste:
    """waste_kg and diversion_rate."""

    def test_waste_kg_sums_discard_flows_of_mass_resources(self) -> None:
        cells = [
            waste(0.5, "recycle"),
            waste(1.25, "landfill", "wood"),
            parts(2, action="discard"),  # no mass
            inp(10.0),
            cell("recover", "plastic", 3.0),
        ]
        assert_value(compute("waste_kg", cells), 1.75, "measured")
        assert compute("waste_kg", [inp(1.0)]) == Value(None, None, "no waste recorded")

    def test_diversion_rate_is_reuse_recycle_and_compost_over_all_waste(self) -> None:
        cells = [
            waste(1.0, "reuse"),
            waste(2.0, "recycle"),
            waste(3.0, "compost", "food"),
            waste(4.0, "energy"),
            waste(5.0, "incineration"),
            waste(4.0, "landfill"),
            waste(1.0, ""),  # fate not known: waste, not diverted
        ]
        assert_value(compute("diversion_rate", cells), 0.3, "measured")  # 6 / 20

    def test_diversion_rate_without_waste_is_none(self) -> None:
        assert compute("diversion_rate", [inp(1.0)]) == Value(None, None, "no waste recorded")


class TestEnergy:
    """energy_kwh, energy_per_kg, local_energy_share."""

    def test_energy_kwh_sums_electricity_consumed(self) -> None:
        cells = [power(3.0), power(4.5, "site"), inp(9.0)]
        assert_value(compute("energy_kwh", cells), 7.5, "measured")
        assert compute("energy_kwh", [inp(1.0)]) == Value(None, None, "no electricity recorded")

    def test_energy_per_kg_is_energy_over_produced_mass(self) -> None:
        cells = [power(10.0), cell("produce", "plastic", 4.0)]
        assert_value(compute("energy_per_kg", cells), 2.5, "measured")
        # Produced mass modelled from designs: the ratio is modelled too.
        cells = [power(10.0), parts(8, each_kg=0.5)]
        assert_value(compute("energy_per_kg", cells), 2.5, "modelled")

    def test_energy_per_kg_needs_both_terms(self) -> None:
        assert_missing(compute("energy_per_kg", [power(10.0)]), "produced_kg")
        assert_missing(compute("energy_per_kg", [cell("produce", "plastic", 4.0)]), "energy_kwh")
        zero_made = [power(10.0), cell("produce", "plastic", 0.0)]
        assert compute("energy_per_kg", zero_made) == Value(None, None, "produced_kg is 0")

    def test_local_energy_share_is_site_and_city_electricity(self) -> None:
        cells = [power(1.0, "site"), power(3.0, "city"), power(4.0, "region"), power(2.0, "beyond")]
        assert_value(compute("local_energy_share", cells), 0.4, "measured")  # 4 / 10
        assert compute("local_energy_share", [inp(1.0)]) == Value(
            None, None, "no electricity recorded"
        )


class TestHours:
    """work_hours, training_hours, machine_hours."""

    def test_work_training_and_machine_hours(self) -> None:
        cells = [
            cell("work", "work_hours", 3.0),
            cell("work", "work_hours", 2.5, state="reported"),
            cell("work", "training_hours", 4.0),
            machine(2.0, "printer"),
            machine(1.0, "laser"),
        ]
        assert_value(compute("work_hours", cells), 5.5, "reported")
        assert_value(compute("training_hours", cells), 4.0, "measured")
        assert_value(compute("machine_hours", cells), 3.0, "measured")

    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("work_hours", "no work hours recorded"),
            ("training_hours", "no training hours recorded"),
            ("machine_hours", "no machine hours recorded"),
        ],
    )
    def test_hours_not_recorded_are_none(self, name: str, reason: str) -> None:
        assert compute(name, [inp(1.0)]) == Value(None, None, reason)


class TestUtilization:
    """utilization: machine hours over the machines that reported use, times the hours."""

    def test_utilization_is_machine_hours_over_machines_that_reported_use_times_hours(self) -> None:
        cells = [
            machine(6.0, "printer"),
            machine(6.0, "laser"),
            machine(12.0, "printer", site="hub"),  # another site's printer is another machine
        ]
        # 24 h / (3 machines × 24 h)
        assert_value(compute("utilization", cells, ctx(hours=24.0)), 1 / 3, "measured")
        # Over a week: 24 h / (3 × 168 h)
        assert_value(compute("utilization", cells, ctx(hours=168.0)), 24 / 504, "measured")

    def test_utilization_counts_a_machine_once_across_cells(self) -> None:
        cells = [machine(3.0, "printer"), machine(9.0, "printer", state="reported")]
        assert_value(compute("utilization", cells, ctx(hours=24.0)), 0.5, "reported")  # 12 / 24

    def test_utilization_without_machine_hours_is_none(self) -> None:
        reason = "no machine hours recorded"
        assert compute("utilization", [power(1.0)]) == Value(None, None, reason)


class TestReportingCoverage:
    """reporting_coverage: sites reporting over sites active."""

    def test_reporting_coverage_is_sites_reporting_over_sites_active(self) -> None:
        assert compute("reporting_coverage", [], ctx(sites_active=4, sites_reporting=3)) == Value(
            0.75, "measured"
        )
        assert compute("reporting_coverage", [], ctx(sites_active=4, sites_reporting=0)) == Value(
            0.0, "measured"
        )
        assert_missing(compute("reporting_coverage", [], ctx(sites_active=0, sites_reporting=0)))


def mfa_cells() -> list[Cell]:
    return [
        inp(10.0, "city"),  # DE
        inp(5.0, "site", "wood"),  # DE
        inp(4.0, "city", "recycled_plastic", recycled=True),  # local but recycled: not DE
        inp(20.0, "region", "metal"),  # IMP
        inp(30.0, "beyond", "glass"),  # IMP
        inp(6.0, "beyond", "recycled_plastic", recycled=True),  # IMP, recycled or not
        power(100.0, "beyond"),  # energy: outside the material accounts
        cell("produce", "plastic", 7.0, ring="beyond"),  # EXP
        cell("modify", "wood", 2.0, ring="region"),  # EXP
        waste(3.0, "recycle", ring="region"),  # EXP
        waste(1.0, "landfill", ring="city"),  # stays in the city
        cell("produce", "plastic", 8.0, ring="city"),  # stays in the city
        parts(10, ring="beyond"),  # counted, no design mass: no mass to export
        cell("recover", "plastic", 9.0),  # U
    ]


class TestMaterialAccounts:
    """The material flow accounts: DE, IMP, EXP, DMI, DMC, PTB, U, CMU, per person."""

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("de", 15.0),  # 10 + 5
            ("imp", 56.0),  # 20 + 30 + 6
            ("exp", 12.0),  # 7 + 2 + 3
            ("dmi", 71.0),  # 15 + 56
            ("dmc", 59.0),  # 15 + 56 − 12
            ("ptb", 44.0),  # 56 − 12
            ("u", 9.0),
            ("cmu", 9 / 68),  # 9 / (59 + 9)
        ],
    )
    def test_material_flow_accounts(self, name: str, value: float) -> None:
        assert_value(compute(name, mfa_cells()), value, "measured")

    def test_exp_includes_things_made_for_outside_modelled_from_design_mass(self) -> None:
        cells = [*mfa_cells(), parts(4, ring="beyond", each_kg=1.25)]  # + 5 kg, modelled
        assert_value(compute("exp", cells), 17.0, "modelled")
        assert_value(compute("dmc", cells), 54.0, "modelled")  # 71 − 17
        assert_value(compute("ptb", cells), 39.0, "modelled")  # 56 − 17
        assert_value(compute("dmi", cells), 71.0, "measured")

    def test_per_person_accounts(self) -> None:
        with_population = ctx(population=1000)
        assert_value(compute("dmi_per_person", mfa_cells(), with_population), 0.071, "measured")
        assert_value(compute("dmc_per_person", mfa_cells(), with_population), 0.059, "measured")

    @pytest.mark.parametrize("name", ["dmi_per_person", "dmc_per_person", "waste_kg_per_person"])
    def test_per_person_without_population_is_none_with_a_reason(self, name: str) -> None:
        assert_missing(compute(name, mfa_cells(), ctx(population=None)), "population")

    def test_cmu_check_of_metrics_md_adapted_to_flows(self) -> None:
        # METRICS.md: DMC 100 and U 14 give CMU 14 / 114 = 12.281 %.
        cells = [
            inp(120.0, "beyond"),  # IMP 120
            cell("produce", "plastic", 20.0, ring="beyond"),  # EXP 20: DMC = 120 − 20 = 100
            cell("recover", "plastic", 14.0),  # U 14
        ]
        assert_value(compute("dmc", cells), 100.0, "measured")
        assert_value(compute("u", cells), 14.0, "measured")
        value = compute("cmu", cells).value
        assert value is not None
        assert round(value * 100, 3) == 12.281

    @pytest.mark.parametrize("name", ["de", "imp", "exp", "dmi", "dmc", "ptb", "u", "cmu"])
    def test_accounts_without_any_mass_flow_are_none(self, name: str) -> None:
        assert_missing(compute(name, [power(5.0), parts(3), machine(1.0, "printer")]))

    @pytest.mark.parametrize(("name", "value"), [("de", 0.0), ("imp", 2.0), ("u", 0.0)])
    def test_accounts_of_nothing_in_their_class_are_zero_once_mass_is_recorded(
        self, name: str, value: float
    ) -> None:
        assert_value(compute(name, [inp(2.0, "beyond")]), value, "measured")

    def test_exp_of_nothing_leaving_the_city_is_zero_with_a_state(self) -> None:
        # Mass flows were recorded and none left the city: EXP is a real 0, and like DE and IMP
        # it carries a state ("every value carries a state"; only a missing value has none).
        assert_value(compute("exp", [inp(2.0, "city")]), 0.0, "measured")


class TestPito:
    """pito: what comes from beyond or ends in landfill or fire, over inputs and waste."""

    def test_pito(self) -> None:
        cells = [
            inp(10.0, "city"),
            inp(20.0, "region"),
            inp(30.0, "beyond"),
            waste(10.0, "recycle"),
            waste(15.0, "landfill"),
            waste(5.0, "incineration"),
            waste(10.0, "energy"),
            power(500.0, "beyond"),  # not an input
        ]
        # (beyond 30 + landfill 15 + incineration 5) / (inputs 60 + waste 40)
        assert_value(compute("pito", cells), 0.5, "measured")

    def test_pito_without_inputs_or_waste_is_none(self) -> None:
        assert compute("pito", [parts(2), power(3.0)]) == Value(
            None, None, "no inputs or waste recorded"
        )


def fci_cells() -> list[Cell]:
    return [
        parts(1, design="open"),
        parts(3),  # open_design_share 1/4
        inp(2.0, "city"),
        inp(2.0, "beyond"),  # local_input_share 2/4
        waste(3.0, "recycle"),
        waste(1.0, "landfill"),  # diversion_rate 3/4
    ]


class TestDido:
    """dido: the mean of its four terms, or of those recorded."""

    def test_dido_is_the_mean_of_its_four_terms(self) -> None:
        value = compute("dido", fci_cells(), ctx(sites_active=4, sites_reporting=2))
        # (0.25 + 0.5 + 0.75 + 0.5) / 4
        assert_value(value, 0.5, "measured")
        assert value.terms == DIDO_TERMS
        assert DIDO_TERMS == (
            "open_design_share",
            "local_input_share",
            "diversion_rate",
            "reporting_coverage",
        )

    def test_dido_with_missing_terms_is_modelled_and_names_the_terms_it_used(self) -> None:
        cells = [inp(3.0, "city"), inp(1.0, "beyond")]  # no production, no waste
        context = ctx(sites_active=2, sites_reporting=1)
        value = compute("dido", cells, context)
        assert_value(value, (0.75 + 0.5) / 2, "modelled")
        assert value.terms == ("local_input_share", "reporting_coverage")
        # The two missing terms at 0: 1.25 / 4; at 1: 3.25 / 4.
        assert value.range == (0.3125, 0.8125)
        # PITO = beyond 1 / inputs 4; FCI = 0.625 × 0.75, modelled through DIDO, and DIDO's
        # range × 0.75.
        fci = compute("fci", cells, context)
        assert_value(fci, 0.625 * 0.75, "modelled")
        assert fci.terms == ("local_input_share", "reporting_coverage")
        assert fci.range == pytest.approx((0.3125 * 0.75, 0.8125 * 0.75))

    def test_a_window_without_events_has_no_dido(self) -> None:
        # Reporting coverage is a real 0 there (no site reported), but a DIDO of it alone
        # would read as a city that makes nothing locally.
        quiet = ctx(sites_active=2, sites_reporting=0, events=0)
        assert compute("reporting_coverage", [], quiet).value == 0
        for name in ("dido", "fci"):
            value = compute(name, [], quiet)
            assert (value.value, value.range) == (None, None)
            assert value.reason == "no events in this window"


class TestFci:
    """fci: DIDO × (1 − PITO), a range when PITO is missing."""

    def test_fci_is_dido_times_one_minus_pito(self) -> None:
        context = ctx(sites_active=4, sites_reporting=2)
        # PITO = (beyond 2 + landfill 1) / (inputs 4 + waste 4) = 0.375
        assert_value(compute("pito", fci_cells(), context), 0.375, "measured")
        value = compute("fci", fci_cells(), context)
        assert_value(value, 0.5 * 0.625, "measured")
        assert value.range is None

    def test_fci_without_pito_is_the_range_zero_to_dido(self) -> None:
        # Things made but no inputs or waste recorded: PITO is not recorded.
        cells = [parts(1, design="open"), parts(1, design="closed")]
        context = ctx(sites_active=4, sites_reporting=2)
        assert compute("pito", cells, context).value is None
        value = compute("fci", cells, context)
        assert value.value is None
        assert value.range is not None
        low, high = value.range
        assert low == 0.0
        # DIDO = (0.5 + 0.5) / 2 = 0.5 of two terms; with the two others at 1, (1 + 2) / 4:
        # the range reaches DIDO's upper bound.
        assert high == pytest.approx(0.75)
        assert compute("dido", cells, context).range == (0.25, 0.75)
        assert value.reason
        assert value.state == "modelled"
        assert value.terms == ("open_design_share", "reporting_coverage")

    def test_fci_without_dido_is_none(self) -> None:
        value = compute("fci", [], ctx(sites_active=0, sites_reporting=0))
        assert value.value is None
        assert value.range is None
        assert value.state is None
        assert value.reason and "DIDO" in value.reason
        assert_missing(compute("dido", [], ctx(sites_active=0, sites_reporting=0)))


def merged(cells: Sequence[Cell], start: date) -> list[Cell]:
    """The cells of a longer window: same keys added up, as the rollups of a week are."""
    totals: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for c in cells:
        key: tuple[Any, ...] = (c.site, c.device, c.action, c.resource, c.dimension)
        key += (c.mfa_category, c.ring, c.fate, c.recycled, c.design, c.state)
        sums = totals[key]
        for i, n in enumerate((c.amount, c.design_mass, c.design_mass_flows, c.flows)):
            sums[i] += n
    return [Cell(start, *key, *sums) for key, sums in totals.items()]


class TestRatioOfSums:
    """Metrics over merged cells (a longer window): ratios of sums, not means of ratios."""

    def test_a_ratio_over_two_days_is_the_ratio_of_sums_not_the_mean_of_daily_ratios(self) -> None:
        monday, tuesday = date(2026, 3, 9), date(2026, 3, 10)
        day1 = [inp(1.0, "city", start=monday), waste(1.0, "recycle", start=monday)]
        day2 = [
            inp(1.0, "city", start=tuesday),
            inp(3.0, "beyond", start=tuesday),
            waste(1.0, "recycle", start=tuesday),
            waste(7.0, "landfill", start=tuesday),
        ]
        daily = [compute("local_input_share", d).value for d in (day1, day2)]
        assert daily == [1.0, 0.25]  # their mean would be 0.625
        week = merged(day1 + day2, monday)
        assert len(week) == 4
        assert_value(compute("local_input_share", week), 0.4, "measured")  # (1 + 1) / (1 + 4)
        assert_value(compute("local_input_share", day1 + day2), 0.4, "measured")
        # Diversion: 1/1 and 1/8 by day; (1 + 1) / (1 + 8) over both.
        assert_value(compute("diversion_rate", week), 2 / 9, "measured")
        # PITO: 0/2 and (3 + 7)/12 by day; 10 / 14 over both.
        assert_value(compute("pito", week), 10 / 14, "measured")

    def test_merging_cells_changes_no_metric(self) -> None:
        cells = a_day_at_the_lab()
        doubled = merged([*cells, *cells], DAY)
        for name, (value, state) in A_DAY.items():
            if name in ("utilization",):
                continue
            expected = value if METRICS[name].unit in ("ratio", "kWh/kg") else 2 * value
            assert_value(compute(name, doubled, DAY_CONTEXT), expected, state)
        # Two days of the same machine hours over a 48 h window: the same utilization.
        assert_value(compute("utilization", doubled, ctx(hours=48.0)), 12 / 72, "measured")


class TestGroupKey:
    """`group_key`: the key of a cell in each grouping."""

    def test_group_key_for_each_grouping(self) -> None:
        c = inp(1.0, "region", "wood", site="hub", device="laser")
        keys: dict[GroupBy, str] = {
            "site": "hub",
            "device": "hub/laser",  # across the city's sites: the hub's laser
            "resource": "wood",
            "ring": "region",
            "mfa_category": "MF1",
        }
        assert set(keys) == set(get_args(GroupBy))
        for group_by, key in keys.items():
            assert group_key(c, group_by) == key

    def test_group_key_of_a_site_report_and_of_a_resource_without_mfa_category(self) -> None:
        report = power(1.0, device="", site="hub")
        assert group_key(report, "device") == "hub/(site reports)"
        assert group_key(report, "device", one_site=True) == "(site reports)"
        assert group_key(power(1.0), "mfa_category") == "none"

    def test_two_sites_devices_of_one_slug_are_two_parts_of_the_city(self) -> None:
        """A device's slug is its site's own: the lab's printer and the hub's are two."""
        lab = inp(1.0, "region", site="lab", device="printer")
        hub = inp(1.0, "region", site="hub", device="printer")
        assert group_key(lab, "device") != group_key(hub, "device")
        assert group_key(lab, "device", one_site=True) == "printer"


class TestConfidence:
    """METRICS.md, "Confidence": low, medium or high from the window's coverage."""

    @pytest.mark.parametrize(
        ("events", "reporting", "partial", "expected"),
        [
            (9, 10, False, "low"),  # fewer than 10 events
            (10, 10, False, "medium"),
            (29, 10, False, "medium"),
            (30, 10, False, "high"),
            (30, 8, False, "high"),  # 80 % of the sites
            (30, 7, False, "medium"),  # 70 %
            (30, 5, False, "medium"),  # half
            (30, 4, False, "low"),  # fewer than half
            (100, 10, True, "low"),  # the window is not over
        ],
    )
    def test_boundaries(self, events: int, reporting: int, partial: bool, expected: str) -> None:
        context = replace(
            ctx(sites_active=10, sites_reporting=reporting, events=events), partial=partial
        )
        assert confidence(Value(1.0, "measured"), context) == expected

    def test_a_range_is_never_high_and_nothing_recorded_has_none(self) -> None:
        context = ctx(sites_active=1, sites_reporting=1, events=50)
        assert confidence(Value(1.0, "modelled", range=(0.75, 1.0)), context) == "medium"
        assert confidence(Value(None, "modelled", range=(0.0, 1.0)), context) == "medium"
        assert confidence(Value(None, None, "no waste recorded"), context) is None


def test_each_class_of_cells_is_one_object() -> None:
    """A class (`Sum`) is hashed by identity: two equal ones would be two columns of sums in
    the series' SQL, and two lookups. Every class the metrics add up is declared once."""
    found: dict[int, Sum] = {}
    for metric in METRICS.values():
        m = metric.compute
        if isinstance(m, Additive):
            classes = [m.whole] + ([m.part] if m.part is not None else [])
        else:
            assert isinstance(m, FromTotals)
            classes = [*m.needs, *m.counts]
        found.update((id(s), s) for s in classes)
    by_fields = {tuple(getattr(s, f.name) for f in fields(s)) for s in found.values()}
    assert len(by_fields) == len(found)
    assert len(found) > 20  # the classes were found at all
