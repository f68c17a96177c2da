"""The material flows of a period as a Sankey diagram that balances.

Mass only (kg), from rollup cells, in millionths so every node balances exactly:

    origin (ring) ─▶ MFA category ─▶ city ─▶ products kept / exported, waste by fate
         ▲                                 └▶ recovered ─┐   (secondary material made in the city
         └──────────── recovered ◀───────────────────────┘    re-enters as a recycled local input)

At the category, city and recovered nodes what comes in equals what goes out. What the
period's inputs leave behind goes to `stock:added`; outputs beyond the period's inputs (made of
material bought earlier) come from `stock:drawn`. Those two links are the only ones that are
inferred, and they are `modelled`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from fabcity.read.metrics import LOCAL, Cell, weakest

SOURCE_KINDS = frozenset({"origin", "stock"})
SINK_KINDS = frozenset({"product", "waste", "stock"})
CITY = "city"
RECOVERED = "recovered"
STOCK_ADDED = "stock:added"
STOCK_DRAWN = "stock:drawn"

RING_LABELS = {
    "site": "From the sites themselves",
    "city": "From the city",
    "region": "From the region",
    "beyond": "From beyond (imported)",
}
CATEGORY_LABELS = {
    "MF1": "MF1 biomass",
    "MF2": "MF2 metal ores",
    "MF3": "MF3 non-metallic minerals",
    "MF4": "MF4 fossil energy materials",
    "none": "Outside the MFA categories",
}
FATE_LABELS = {
    "reuse": "Waste reused",
    "recycle": "Waste recycled",
    "compost": "Waste composted",
    "energy": "Waste to energy",
    "incineration": "Waste incinerated",
    "landfill": "Waste landfilled",
    "": "Waste, fate not given",
}


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: str  # origin, category, city, recovered, product, waste, stock


@dataclass(frozen=True)
class Link:
    source: str
    target: str
    amount: int  # millionths of kg
    state: str | None


@dataclass(frozen=True)
class Sankey:
    nodes: list[Node]
    links: list[Link]
    unweighed: int  # millionths of a count: things made or repaired of unknown mass


class _Builder:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.amounts: dict[tuple[str, str], int] = defaultdict(int)
        self.states: dict[tuple[str, str], list[str | None]] = defaultdict(list)

    def node(self, id: str, label: str, kind: str) -> str:
        self.nodes.setdefault(id, Node(id, label, kind))
        return id

    def link(self, source: str, target: str, amount: int, state: str | None) -> None:
        if amount <= 0:
            return
        self.amounts[source, target] += amount
        self.states[source, target].append(state)

    def total(self, node: str, side: int) -> int:
        """What flows into (side 1) or out of (side 0) a node."""
        return sum(a for key, a in self.amounts.items() if key[side] == node)


def build(cells: Sequence[Cell]) -> Sankey:
    # Nodes and links come in the order the cells first name them, and a cube's rows come in
    # no order of their own (a hash aggregate's): in a fixed one, the same flows make the
    # same diagram, and keep their ETag, whatever plan PostgreSQL chose.
    cells = sorted(cells, key=_kind)
    b = _Builder()
    city = b.node(CITY, "The city's sites", "city")
    mass = [c for c in cells if c.dimension == "mass"]

    for c in mass:
        if c.action != "consume":
            continue
        if c.recycled and c.ring in LOCAL:
            # Secondary material of the city: it closes the loop through `recovered`.
            origin = b.node(RECOVERED, "Recovered in the city", "recovered")
        else:
            label = RING_LABELS.get(c.ring, f"From {c.ring}")
            origin = b.node(f"origin:{c.ring}", label, "origin")
        key = c.mfa_category or "none"
        category = b.node(f"mfa:{key}", CATEGORY_LABELS.get(key, key), "category")
        b.link(origin, category, c.amount, c.state)
        b.link(category, city, c.amount, c.state)

    for c in cells:
        if c.action in ("produce", "modify"):
            if c.dimension == "mass":
                amount, state = c.amount, c.state
            elif c.dimension == "count" and c.design_mass_flows:
                amount, state = c.design_mass, "modelled"
            else:
                continue
            if c.ring in LOCAL:
                target = b.node("product:kept", "Products kept in the city", "product")
            else:
                target = b.node("product:exported", "Products exported", "product")
            b.link(city, target, amount, state)
        elif c.action == "discard" and c.dimension == "mass":
            label = FATE_LABELS.get(c.fate, f"Waste: {c.fate}")
            b.link(city, b.node(f"waste:{c.fate or 'unknown'}", label, "waste"), c.amount, c.state)
        elif c.action == "recover" and c.dimension == "mass":
            recovered = b.node(RECOVERED, "Recovered in the city", "recovered")
            b.link(city, recovered, c.amount, c.state)

    # What stays, or what came from earlier periods, balances the loop node, then the city.
    for node in (RECOVERED, CITY):
        if node not in b.nodes:
            continue
        surplus = b.total(node, 1) - b.total(node, 0)
        if surplus > 0:
            b.link(node, b.node(STOCK_ADDED, "Stays in the city (stock)", "stock"), surplus,
                   "modelled")  # fmt: skip
        elif surplus < 0:
            b.link(b.node(STOCK_DRAWN, "Drawn from stock", "stock"), node, -surplus, "modelled")

    unweighed = sum(
        c.amount
        for c in cells
        if c.action in ("produce", "modify") and c.dimension == "count" and not c.design_mass_flows
    )
    links = [Link(s, t, a, weakest(b.states[s, t])) for (s, t), a in b.amounts.items()]
    used = {end for link in links for end in (link.source, link.target)}
    nodes = [n for n in b.nodes.values() if n.id in used]
    return Sankey(nodes, links, unweighed)


def _kind(c: Cell) -> tuple[str, ...]:
    return (c.action, c.dimension, c.ring, c.mfa_category or "", c.resource, c.fate,
            str(c.recycled), c.design)  # fmt: skip


def imbalance(sankey: Sankey) -> dict[str, int]:
    """In minus out at every node that is neither a source nor a sink (all 0 when balanced)."""
    inflow: dict[str, int] = defaultdict(int)
    outflow: dict[str, int] = defaultdict(int)
    for link in sankey.links:
        outflow[link.source] += link.amount
        inflow[link.target] += link.amount
    return {
        n.id: inflow[n.id] - outflow[n.id]
        for n in sankey.nodes
        if n.kind not in SOURCE_KINDS and n.kind not in SINK_KINDS
    }
