"""The words a flow is made of (actions, rings, fates, resources), each with what it means, and
an example event for every action: shown on `/docs`, kept equal to the README by a test, and
posted by a test to check that every example is accepted as written."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from schemas.events import Action, Fate, Ring

ACTIONS: dict[Action, str] = {
    Action.produce: "made: a thing produced (counted, or weighed)",
    Action.modify: "repaired, refurbished: a thing given a longer life",
    Action.consume: "an input used up: material, electricity",
    Action.discard: "waste out, with a `fate`",
    Action.recover: "waste made into secondary material in the city",
    Action.cite: "a design taken in: data in",
    Action.publish: "a design shared out: data out",
    Action.use: "machine time",
    Action.work: "human time: work, and training on `training_hours`",
}

RINGS: dict[Ring, str] = {
    Ring.site: "the site itself (`cell` is read as `site`)",
    Ring.city: "the city",
    Ring.region: "the region around it",
    Ring.beyond: "anywhere further: physical inputs from here are PITO",
}

FATES: dict[Fate, str] = {
    Fate.reuse: "used again as it is (diverted)",
    Fate.recycle: "made into material again (diverted)",
    Fate.compost: "composted (diverted)",
    Fate.energy: "burnt for energy",
    Fate.incineration: "burnt without recovery",
    Fate.landfill: "landfilled",
}

_DESIGN = "https://example.org/okh/stool.yml"

# The `data` of a `fabcity.flow` event for each action, as a lab would post it.
EXAMPLES: dict[Action, dict[str, Any]] = {
    Action.produce: {
        "action": "produce", "resource": "furniture", "quantity": 3, "unit": "count",
        "ring": "city", "design": _DESIGN,
    },
    Action.modify: {
        "action": "modify", "resource": "product", "quantity": 1, "unit": "count", "ring": "city",
    },
    Action.consume: {
        "action": "consume", "resource": "filament", "quantity": 240, "unit": "g",
        "ring": "city", "recycled": True,
    },
    Action.discard: {
        "action": "discard", "resource": "wood", "quantity": 1.5, "unit": "kg", "ring": "city",
        "fate": "recycle",
    },
    Action.recover: {
        "action": "recover", "resource": "recycled_plastic", "quantity": 12, "unit": "kg",
        "ring": "site",
    },
    Action.cite: {
        "action": "cite", "resource": "design", "quantity": 1, "unit": "count",
        "ring": "beyond", "design": _DESIGN,
    },
    Action.publish: {
        "action": "publish", "resource": "design", "quantity": 1, "unit": "count",
        "ring": "beyond", "design": "https://example.org/okh/lamp.yml",
    },
    Action.use: {
        "action": "use", "resource": "machine_hours", "quantity": 90, "unit": "min",
        "ring": "site",
    },
    Action.work: {
        "action": "work", "resource": "work_hours", "quantity": 6, "unit": "h", "ring": "site",
    },
}  # fmt: skip


def example_event(action: Action, source: str = "/demo-city/fablab-centre") -> dict[str, Any]:
    """A whole CloudEvent carrying the example flow of `action`."""
    return {
        "specversion": "1.0",
        "id": f"example-{action.value}",
        "source": source,
        "type": "fabcity.flow",
        "time": "2026-11-27T10:00:00+01:00",
        "data": EXAMPLES[action],
    }


def describe(resources: Iterable[tuple[str, str, str | None, bool]]) -> str:
    """The vocabulary as Markdown. `resources`: (name, unit, MFA category, secondary)."""
    lines = [
        "A flow is an **action** on a **resource**, a quantity in the resource's unit (or an "
        "exact multiple of it: g for kg, Wh for kWh, min for h), and the **ring** it came from "
        "or went to. Events are CloudEvents 1.0; `POST /v1/events`. Things counted may carry "
        'their mass too: `"mass_kg": 12, "material": "wood"` beside a count of '
        "`furniture` counts 12 kg of wood, and no design's mass is modelled for them.",
        "",
        "| action | means | example `data` of a `fabcity.flow` event |",
        "|---|---|---|",
    ]
    for action, means in ACTIONS.items():
        example = orjson.dumps(EXAMPLES[action]).decode()
        lines.append(f"| `{action.value}` | {means} | `{example}` |")
    lines += ["", "| ring | means |", "|---|---|"]
    lines += [f"| `{ring.value}` | {means} |" for ring, means in RINGS.items()]
    lines += ["", "| fate (`discard` only) | means |", "|---|---|"]
    lines += [f"| `{fate.value}` | {means} |" for fate, means in FATES.items()]
    lines += [
        "",
        "Resources by default (an admin adds more with `POST /v1/resources`; "
        "`GET /v1/resources` lists what the registry holds now):",
        "",
        "| resource | unit | EW-MFA | secondary |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{name}` | {unit} | {mfa or '—'} | {'yes' if secondary else ''} |"
        for name, unit, mfa, secondary in resources
    ]
    return "\n".join(lines)
