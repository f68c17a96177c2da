"""Units and the exact conversions between them.

A quantity is converted to its resource's canonical unit only when the conversion is exact by
definition (g to kg, Wh to kWh, min to h). Anything else (kg of parts, metres of filament) is
refused: it needs a model (a design's mass, a filament's density) that the flow does not carry.
"""

from __future__ import annotations

from fractions import Fraction

from fabcity.errors import UnitError

# dimension -> canonical unit
CANONICAL = {
    "mass": "kg",
    "energy": "kWh",
    "count": "count",
    "time": "h",
    "volume": "m3",
}

# spelling (lower case) -> (dimension, factor to the canonical unit)
_UNITS: dict[str, tuple[str, Fraction]] = {
    "kg": ("mass", Fraction(1)),
    "g": ("mass", Fraction(1, 1000)),
    "mg": ("mass", Fraction(1, 1_000_000)),
    "t": ("mass", Fraction(1000)),
    "tonne": ("mass", Fraction(1000)),
    "lb": ("mass", Fraction("0.45359237")),  # exact by the 1959 international agreement
    "kwh": ("energy", Fraction(1)),
    "wh": ("energy", Fraction(1, 1000)),
    "mwh": ("energy", Fraction(1000)),
    "j": ("energy", Fraction(1, 3_600_000)),
    "kj": ("energy", Fraction(1, 3_600)),
    "mj": ("energy", Fraction(1, 3_600) * 1000),
    "count": ("count", Fraction(1)),
    "pcs": ("count", Fraction(1)),
    "pc": ("count", Fraction(1)),
    "piece": ("count", Fraction(1)),
    "pieces": ("count", Fraction(1)),
    "unit": ("count", Fraction(1)),
    "units": ("count", Fraction(1)),
    "each": ("count", Fraction(1)),
    "1": ("count", Fraction(1)),
    "h": ("time", Fraction(1)),
    "hour": ("time", Fraction(1)),
    "hours": ("time", Fraction(1)),
    "min": ("time", Fraction(1, 60)),
    "s": ("time", Fraction(1, 3600)),
    "m3": ("volume", Fraction(1)),
    "l": ("volume", Fraction(1, 1000)),
    "ml": ("volume", Fraction(1, 1_000_000)),
}


def dimension_of(unit: str) -> str | None:
    found = _UNITS.get(unit.strip().lower())
    return found[0] if found else None


def to_canonical(quantity: float, unit: str, resource: str, resource_unit: str) -> float:
    """`quantity` in `unit`, expressed in `resource_unit`; `UnitError` unless that is exact."""
    found = _UNITS.get(unit.strip().lower())
    target = _UNITS[resource_unit.lower()]
    if found is None:
        raise UnitError(
            f"unknown unit {unit!r} for {resource!r}; use {resource_unit!r} "
            f"or an exact multiple of it ({', '.join(units_of(target[0]))})"
        )
    dimension, factor = found
    if dimension != target[0]:
        raise UnitError(
            f"{resource!r} is measured in {resource_unit!r} ({target[0]}); {unit!r} is a "
            f"{dimension} unit and cannot be converted exactly"
        )
    if factor == target[1]:
        return quantity
    return float(Fraction(quantity) * factor / target[1])


def units_of(dimension: str) -> list[str]:
    return [u for u, (d, _) in _UNITS.items() if d == dimension]
