"""A city's period at a glance: the headline figures and the material accounts; and metrics of
the period broken down by site, device, resource, ring or MFA category.

Every figure is computed over the whole period (ratios of sums, never means of days). A figure
that is not recorded stays null with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from fabcity.read import metrics
from fabcity.read.metrics import Cell, GroupBy, Value
from fabcity.read.queries import Period, compute, coverage, said
from fabcity.read.sankey import CATEGORY_LABELS
from schemas import reports

# (metric, label, headline tile): the tiles first, in the order a planner reads them.
FIGURES: tuple[tuple[str, str, bool], ...] = (
    ("fci", "Fab City Index", True),
    ("local_input_share", "Local input share", True),
    ("cmu", "Circular material use", True),
    ("dmc_per_person", "Material consumption per person", True),
    ("produced_count", "Things made", True),
    ("repaired_count", "Things repaired", True),
    ("diversion_rate", "Waste diverted", True),
    ("dido", "DIDO: data in, data out", False),
    ("pito", "PITO: products in, trash out", False),
    ("input_kg", "Inputs", False),
    ("waste_kg", "Waste", False),
    ("waste_kg_per_person", "Waste per person", False),
    ("dmc", "Domestic material consumption", False),
    ("energy_kwh", "Electricity", False),
    ("open_design_share", "Made from open designs", False),
    ("reporting_coverage", "Sites reporting", False),
)
ACCOUNTS = ("de", "imp", "exp", "dmc", "u")


def figure(name: str, label: str, value: Value, headline: bool = False) -> reports.Figure:
    unit = metrics.METRICS[name].unit
    return reports.Figure(name=name, label=label, unit=unit, headline=headline, **said(value))


def accounts(period: Period) -> list[reports.Account]:
    """EW-MFA accounts per material category found in the period, then their total."""
    categories = sorted({c.mfa_category for c in period.cells if c.mfa_category is not None})
    rows = [
        _account(
            period, k, CATEGORY_LABELS.get(k, k), [c for c in period.cells if c.mfa_category == k]
        )
        for k in categories
    ]
    rows.append(_account(period, "total", "All materials", period.cells))
    return rows


def _account(period: Period, key: str, label: str, cells: Sequence[Cell]) -> reports.Account:
    values = {name: figure(name, name.upper(), period.value(name, cells)) for name in ACCOUNTS}
    return reports.Account(category=key, label=label, **values)


def summarise(period: Period) -> reports.Summary:
    ctx = period.facts
    return reports.Summary(
        city=period.city.slug,
        name=period.city.name,
        timezone=period.city.timezone,
        population=period.city.population,
        from_=period.first,
        to=period.last,
        partial=ctx.partial,
        coverage=coverage(ctx),
        figures=[figure(n, label, period.value(n), tile) for n, label, tile in FIGURES],
        accounts=accounts(period),
    )


def breakdown(period: Period, names: Sequence[str], group_by: GroupBy | None) -> reports.Breakdown:
    """Each metric of each part of the city over the whole period: the parts `group_by` tells
    apart in the period's cells (as a series' groups, in key order), each value computed from
    its part's cells with the period's coverage, as a series computes a window's.

    The dashboard's map wants each site's inputs over the period: asked as a day series by
    site and summed, a year was 7,300 points and 1.4 MB of JSON for 20 numbers."""
    groups: dict[str | None, list[Cell]] = {}
    if group_by is None:
        groups[None] = period.cells
    else:
        for c in period.cells:
            groups.setdefault(metrics.group_key(c, group_by), []).append(c)
    ctx, ordered = period.facts, sorted(groups.items(), key=lambda kv: kv[0] or "")
    parts = [
        _part(name, key, compute(name, cells, ctx)) for name in names for key, cells in ordered
    ]
    return reports.Breakdown(
        city=period.city.slug,
        timezone=period.city.timezone,
        group_by=group_by,
        from_=period.first,
        to=period.last,
        partial=ctx.partial,
        coverage=coverage(ctx),
        parts=parts,
    )


def _part(name: str, key: str | None, value: Value) -> reports.Part:
    return reports.Part(name=name, unit=metrics.METRICS[name].unit, key=key, **said(value))
