"""Units and the exact conversions between them.

A quantity is converted to its resource's canonical unit only when the conversion is exact by
definition (g to kg, Wh to kWh, min to h). Anything else (kg of parts, metres of filament) is
refused: it needs a model (a design's mass, a filament's density) that the flow does not carry.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

from fabcity.core.errors import UnitError

# dimension -> canonical unit
CANONICAL = {
    "mass": "kg",
    "energy": "kWh",
    "count": "count",
    "time": "h",
    "volume": "m3",
}

# spelling -> (dimension, factor to the canonical unit). Case matters where SI prefixes
# differ only by case (mWh and MWh, mg and Mg); other spellings are also found case-blind.
_UNITS: dict[str, tuple[str, Fraction]] = {
    "kg": ("mass", Fraction(1)),
    "g": ("mass", Fraction(1, 1000)),
    "mg": ("mass", Fraction(1, 1_000_000)),
    "t": ("mass", Fraction(1000)),
    "Mg": ("mass", Fraction(1000)),
    "tonne": ("mass", Fraction(1000)),
    "lb": ("mass", Fraction("0.45359237")),  # exact by the 1959 international agreement
    "kWh": ("energy", Fraction(1)),
    "Wh": ("energy", Fraction(1, 1000)),
    "mWh": ("energy", Fraction(1, 1_000_000)),
    "MWh": ("energy", Fraction(1000)),
    "J": ("energy", Fraction(1, 3_600_000)),
    "kJ": ("energy", Fraction(1, 3_600)),
    "mJ": ("energy", Fraction(1, 3_600_000_000)),
    "MJ": ("energy", Fraction(1000, 3_600)),
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
    "L": ("volume", Fraction(1, 1000)),
    "mL": ("volume", Fraction(1, 1_000_000)),
}
_BY_FOLDED: dict[str, list[str]] = {}
for _spelling in _UNITS:
    _BY_FOLDED.setdefault(_spelling.lower(), []).append(_spelling)


def _lookup(unit: str) -> tuple[str, Fraction] | None:
    """Exact spelling first; a case-blind match only when it is unambiguous ("KWH" is kWh,
    but "mwh" could be mWh or MWh and is refused)."""
    unit = unit.strip()
    if unit in _UNITS:
        return _UNITS[unit]
    candidates = _BY_FOLDED.get(unit.lower(), [])
    return _UNITS[candidates[0]] if len(candidates) == 1 else None


def dimension_of(unit: str) -> str | None:
    found = _lookup(unit)
    return found[0] if found else None


def to_canonical(quantity: float, unit: str, resource: str, resource_unit: str) -> float:
    """`quantity` in `unit`, expressed in `resource_unit`; `UnitError` unless that is exact."""
    numerator, denominator = _terms(unit, resource, resource_unit)
    if numerator == denominator:
        return quantity
    # One float operation is correctly rounded, as the exact product would be once rounded.
    if numerator == 1:
        return quantity / denominator
    if denominator == 1:
        return quantity * numerator
    return float(Fraction(quantity) * Fraction(numerator, denominator))


@lru_cache(maxsize=1024)
def _terms(unit: str, resource: str, resource_unit: str) -> tuple[int, int]:
    """The exact factor from `unit` to `resource_unit` as numerator and denominator, looked up
    once per spelling. Plain integers: this is on every flow's path, and a Fraction's
    comparisons and properties run as Python code."""
    found = _lookup(unit)
    target = _UNITS[resource_unit]
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
    ratio = factor / target[1]
    return ratio.numerator, ratio.denominator


def units_of(dimension: str) -> list[str]:
    return [u for u, (d, _) in _UNITS.items() if d == dimension]
