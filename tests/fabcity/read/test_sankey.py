"""The material Sankey balances at every node, whatever the flows: a property test."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from fabcity.read import sankey
from fabcity.read.metrics import Cell, inputs

DAY = date(2026, 3, 10)
MASS = {"filament": "MF4", "wood": "MF1", "metal": "MF2", "glass": "MF3", "sludge": None}


@st.composite
def cells(draw: st.DrawFn) -> Cell:
    action = draw(st.sampled_from(["consume", "produce", "modify", "discard", "recover", "use"]))
    counted = draw(st.booleans()) and action in ("produce", "modify")
    resource = "part" if counted else draw(st.sampled_from(sorted(MASS)))
    modelled = counted and draw(st.booleans())
    return Cell(
        start=DAY,
        site=draw(st.sampled_from(["lab", "hub"])),
        device="",
        action=action,
        resource=resource,
        dimension="count" if counted else "mass",
        mfa_category=None if counted else MASS[resource],
        ring=draw(st.sampled_from(["site", "city", "region", "beyond"])),
        fate=draw(st.sampled_from(["", "reuse", "recycle", "landfill"])) if action == "discard"
        else "",
        recycled=draw(st.booleans()),
        design="",
        state=draw(st.sampled_from(["measured", "reported", "modelled"])),
        amount=draw(st.integers(min_value=0, max_value=10**12)),
        design_mass=draw(st.integers(min_value=1, max_value=10**9)) if modelled else 0,
        design_mass_flows=1 if modelled else 0,
        flows=1,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(cells(), max_size=40))
def test_every_node_balances(found: list[Cell]) -> None:
    diagram = sankey.build(found)
    assert all(v == 0 for v in sankey.imbalance(diagram).values())
    kinds = {n.id: n.kind for n in diagram.nodes}
    inflow: dict[str, int] = defaultdict(int)
    outflow: dict[str, int] = defaultdict(int)
    for link in diagram.links:
        assert link.amount > 0 and link.source != link.target
        outflow[link.source] += link.amount
        inflow[link.target] += link.amount
    for node, kind in kinds.items():
        if kind == "origin" or node == sankey.STOCK_DRAWN:
            assert inflow[node] == 0
        if kind in ("product", "waste") or node == sankey.STOCK_ADDED:
            assert outflow[node] == 0
    # every kilogram consumed enters the city once, through its material category
    into_city = sum(k.amount for k in diagram.links if kinds[k.source] == "category")
    assert into_city == sum(c.amount for c in inputs(found))
    # what the sources give is what the sinks take
    sources = sum(outflow[n] for n, k in kinds.items() if k == "origin" or n == sankey.STOCK_DRAWN)
    sinks = sum(inflow[n] for n, k in kinds.items() if k in ("product", "waste"))
    assert sources == sinks + inflow.get(sankey.STOCK_ADDED, 0)


def cell(action: str, amount_kg: float, **changes: object) -> Cell:
    base = dict(start=DAY, site="lab", device="", action=action, resource="filament",
                dimension="mass", mfa_category="MF4", ring="city", fate="", recycled=False,
                design="", state="reported", amount=round(amount_kg * 1_000_000),
                design_mass=0, design_mass_flows=0, flows=1)  # fmt: skip
    return Cell(**{**base, **changes})  # type: ignore[arg-type]


def test_recovered_material_loops_back_and_the_rest_is_stock() -> None:
    diagram = sankey.build([
        cell("consume", 4), cell("consume", 2, ring="beyond"),
        cell("consume", 1, recycled=True),  # secondary material of the city
        cell("recover", 1.5, resource="recycled_plastic"),
        cell("discard", 1, fate="landfill"),
        cell("produce", 0, resource="part", dimension="count", mfa_category=None,
             design_mass=2_000_000, design_mass_flows=3),
    ])  # fmt: skip
    links = {(k.source, k.target): (k.amount / 1e6, k.state) for k in diagram.links}
    assert links["recovered", "mfa:MF4"] == (1, "reported")
    assert links["city", "recovered"] == (1.5, "reported")
    assert links["recovered", "stock:added"] == (0.5, "modelled")
    assert links["city", "product:kept"] == (2, "modelled")  # from the design's mass
    # 7 kg in; 2 made, 1 thrown away, 1.5 recovered: 2.5 kg stay
    assert links["city", "stock:added"] == (2.5, "modelled")
    assert sankey.imbalance(diagram) == {"mfa:MF4": 0, "city": 0, "recovered": 0}


def test_no_flows_no_diagram() -> None:
    assert sankey.build([]) == sankey.Sankey([], [], 0)
    counted = cell("produce", 3, resource="part", dimension="count", mfa_category=None)
    assert sankey.build([counted]) == sankey.Sankey([], [], 3_000_000)
