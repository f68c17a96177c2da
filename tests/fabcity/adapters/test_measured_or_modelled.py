"""docs/adapters.md says, family by family, which figures are measured and which modelled.
Here the replay scenario's messages (tests/replay/scenario.py) go through the adapters and
the flows derivation, no broker, no database, and every (figure, state) they make must be
named in that family's row, in the right column."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from fabcity.adapters import prusalink
from fabcity.adapters.base import Device, Message
from fabcity.adapters.routing import ADAPTERS, Router
from fabcity.flows.derive import DeviceInfo, PlainResource, ResourceInfo, derive
from fabcity.ingest.intake import envelope
from fabcity.registry.entries import DEFAULT_RESOURCES
from schemas.devices import PrusaLinkSettings, validate_settings
from schemas.events import CloudEvent
from tests.fabcity.adapters.support import T0
from tests.replay import scenario
from tests.replay.scenario import Publish

DOC = Path(__file__).resolve().parents[3] / "docs" / "adapters.md"
PRINTER_URL = "http://mk4.local"

# What each figure is called in the table.
WORDS = {
    ("use", "machine_hours"): "machine hours",
    ("produce", "part"): "parts",
    ("consume", "electricity"): "energy",
}


def rows() -> dict[str, tuple[str, str]]:
    """The table's rows: adapter (and mode) → (measured, modelled) cells."""
    section = DOC.read_text().split("## Measured or modelled, family by family", 1)[1]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`(?: \((\w+)\))?", cells[0]) if len(cells) == 4 else None
        if match:
            key = match[1] + (f" ({match[2]})" if match[2] else "")
            out[key] = (cells[1], cells[2])
    return out


def row_of(device: Device) -> str:
    mode = getattr(device.settings, "jobs_from", None)
    return f"{device.adapter} ({mode})" if mode else device.adapter


def word_for(action: str, resource: str, kind: str) -> str:
    if (action, resource) in WORDS:
        return WORDS[(action, resource)]
    if kind == "scale":
        return "weighings"
    return "filament kg"  # a job's material and its waste


def figures() -> dict[str, set[tuple[str, str]]]:
    """(word, state) of every flow the scenario's messages make, by table row."""
    specs = scenario.devices(PRINTER_URL)
    devices = [
        Device(i, f"/testville/{d.site}/{d.slug}", d.adapter,
               validate_settings(d.adapter, d.settings), ZoneInfo("Europe/Madrid"))
        for i, d in enumerate(specs, 1)
    ]  # fmt: skip
    kinds = {d.id: s.kind for d, s in zip(devices, specs, strict=True)}
    router = Router(devices)
    resources: dict[str, ResourceInfo] = {
        r.name: PlainResource(r.name, r.unit, r.secondary) for r in DEFAULT_RESOURCES
    }
    mk4 = next(d for d in devices if d.adapter == "prusalink")
    assert isinstance(mk4.settings, PrusaLinkSettings)
    polls = [
        Publish(prusalink.topic(mk4.settings), orjson.dumps(answers))
        for answers in (scenario.prusalink_printing(), scenario.prusalink_finished())
    ]
    messages = [*scenario.phase_a(), *scenario.filler()[:3], *scenario.phase_b(), *polls]
    states: dict[int, dict[str, object]] = defaultdict(dict)
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for n, published in enumerate(messages):
        message = Message(published.topic, published.payload, T0.replace(second=n % 60))
        for device in router.devices_for(message.topic):
            decoded = ADAPTERS[device.adapter].decode(message, device, states[device.id])
            states[device.id] = decoded.state
            info = DeviceInfo(device.id, kinds[device.id], device.settings.model_dump())
            for emitted in decoded.events:
                event = CloudEvent.model_validate(envelope(device, message, emitted))
                for flow in derive(event, resources, info):
                    word = word_for(flow.action, flow.resource, kinds[device.id])
                    out[row_of(device)].add((word, flow.state))
    return out


def test_every_adapter_has_a_row() -> None:
    named = {key.split(" ")[0] for key in rows()}
    assert named == set(ADAPTERS)


def test_each_figure_the_messages_make_is_in_its_column() -> None:
    table = rows()
    made = figures()
    # Every family of the corpus made figures (cloudevents has no corpus here).
    assert set(made) == set(table) - {"cloudevents"}
    for row, found in made.items():
        measured, modelled = table[row]
        for word, state in found:
            cell = measured if state == "measured" else modelled
            assert word in cell, f"{row}: {word} is {state}, but the table's cell says {cell!r}"
