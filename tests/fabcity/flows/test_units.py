"""Unit conversion: exact conversions to the canonical unit, and refusal of everything else."""

from __future__ import annotations

import pytest

from fabcity.core.errors import Invalid, UnitError
from fabcity.flows.units import CANONICAL, dimension_of, to_canonical, units_of


def kg(quantity: float, unit: str, resource: str = "filament") -> float:
    return to_canonical(quantity, unit, resource, "kg")


@pytest.mark.parametrize(
    ("quantity", "unit", "resource_unit", "expected"),
    [
        (250, "g", "kg", 0.25),
        (1, "g", "kg", 0.001),
        (2_000_000, "mg", "kg", 2.0),
        (2, "t", "kg", 2000.0),
        (0.5, "tonne", "kg", 500.0),
        (1500, "Wh", "kWh", 1.5),
        (3, "MWh", "kWh", 3000.0),
        (7_200_000, "J", "kWh", 2.0),
        (3600, "kJ", "kWh", 1.0),
        (18, "MJ", "kWh", 5.0),  # 18 MJ = 18e6 J = 18e6 / 3.6e6 kWh
        (90, "min", "h", 1.5),
        (45, "min", "h", 0.75),
        (5400, "s", "h", 1.5),
        (250, "l", "m3", 0.25),
        (12, "pcs", "count", 12.0),
    ],
)
def test_exact_conversions(quantity: float, unit: str, resource_unit: str, expected: float) -> None:
    # Every case is exact in binary floating point, so equality (not approx) is asserted:
    # the conversion goes through fractions and must not add rounding error.
    assert to_canonical(quantity, unit, "r", resource_unit) == expected


def test_the_canonical_unit_passes_through_unchanged() -> None:
    assert kg(0.1, "kg") == 0.1
    assert to_canonical(1.25, "kWh", "electricity", "kWh") == 1.25


def test_conversion_does_not_accumulate_binary_rounding() -> None:
    # 100 g is 0.1 kg; multiplying by a float 0.001 gives 0.1 too, but 300 g * 0.001 would
    # give 0.30000000000000004. Fraction arithmetic rounds once, to the nearest float.
    assert kg(300, "g") == 0.3
    assert to_canonical(10, "min", "work_hours", "h") == 10 / 60


@pytest.mark.parametrize("spelling", ["G", "g", " g ", "\tg\n"])
def test_gram_spellings_are_case_and_space_insensitive(spelling: str) -> None:
    assert kg(250, spelling) == 0.25


@pytest.mark.parametrize("spelling", ["wh", "Wh", "WH", "wH"])
def test_watt_hour_spellings(spelling: str) -> None:
    assert to_canonical(1500, spelling, "electricity", "kWh") == 1.5


@pytest.mark.parametrize("spelling", ["KG", "Kg", "kG", "T", "Tonne", "LB"])
def test_other_mass_spellings(spelling: str) -> None:
    assert kg(1, spelling) > 0


@pytest.mark.parametrize("spelling", ["Pieces", "PCS", "each", "Units", "1"])
def test_count_spellings(spelling: str) -> None:
    assert to_canonical(3, spelling, "part", "count") == 3.0


def test_pound_uses_the_international_definition() -> None:
    # 1 lb = 0.45359237 kg exactly (1959); 10 lb = 4.5359237 kg.
    assert kg(1, "lb") == 0.45359237
    assert kg(10, "lb") == 4.5359237
    assert kg(100, "lb") == pytest.approx(45.359237, abs=0)


def test_kg_for_a_count_resource_is_refused_naming_the_canonical_unit() -> None:
    with pytest.raises(UnitError) as info:
        to_canonical(2, "kg", "part", "count")
    message = info.value.detail
    assert "'part'" in message
    assert "'count'" in message
    assert "'kg'" in message


def test_count_for_a_mass_resource_is_refused() -> None:
    with pytest.raises(UnitError) as info:
        to_canonical(3, "pcs", "filament", "kg")
    assert "'kg'" in info.value.detail


def test_time_for_an_energy_resource_is_refused() -> None:
    with pytest.raises(UnitError):
        to_canonical(1, "h", "electricity", "kWh")


@pytest.mark.parametrize("unit", ["m", "mm", "furlong", "", "kgs", "kilogram"])
def test_unknown_unit_is_refused_and_lists_the_accepted_units(unit: str) -> None:
    # Metres of filament need a density the flow does not carry: no guessing.
    with pytest.raises(UnitError) as info:
        kg(1, unit)
    message = info.value.detail
    assert "unknown unit" in message
    assert "'kg'" in message
    for accepted in ("g", "t", "lb"):
        assert accepted in message


def test_unit_errors_are_client_errors() -> None:
    # The ingest path reports `Invalid` per event; a unit error must be one, with a 422.
    assert issubclass(UnitError, Invalid)
    assert UnitError("x").status == 422


def test_dimension_of() -> None:
    assert dimension_of("G") == "mass"
    assert dimension_of("kWh") == "energy"
    assert dimension_of("min") == "time"
    assert dimension_of("pcs") == "count"
    assert dimension_of("L") == "volume"
    assert dimension_of("parsec") is None


def test_every_canonical_unit_is_a_unit_of_its_own_dimension_with_factor_one() -> None:
    for dimension, unit in CANONICAL.items():
        assert dimension_of(unit) == dimension
        assert unit in units_of(dimension)
        assert to_canonical(7, unit, "r", unit) == 7


def test_units_of_lists_only_that_dimension() -> None:
    energy = units_of("energy")
    assert {"kWh", "Wh", "mWh", "MWh", "J", "kJ", "mJ", "MJ"} == set(energy)
    assert "kg" not in energy
    assert units_of("colour") == []


@pytest.mark.parametrize(
    ("unit", "resource_unit", "quantity", "meaning"),
    [
        # milli-watt-hour: 1000 mWh = 1 Wh = 0.001 kWh (a small sensor's natural unit)
        ("mWh", "kWh", 1000, 0.001),
        # mega-gram: 1 Mg = 1 t = 1000 kg
        ("Mg", "kg", 1, 1000.0),
        # milli-joule: 3.6e9 mJ = 3.6e6 J = 1 kWh
        ("mJ", "kWh", 3.6e9, 1.0),
    ],
)
def test_case_folding_does_not_confuse_milli_and_mega(
    unit: str, resource_unit: str, quantity: float, meaning: float
) -> None:
    # Spellings are matched case-insensitively, but `m` (milli) and `M` (mega) differ by 10^6
    # (10^9 for grams). A unit that is converted must mean what SI says it means; refusing it
    # is acceptable, silently reading it with the other prefix is not.
    try:
        converted = to_canonical(quantity, unit, "r", resource_unit)
    except UnitError:
        return
    assert converted == pytest.approx(meaning)
