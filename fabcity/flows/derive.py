"""Turning events into flows: pure functions, so a rebuild derives exactly what ingest did.

- `fabcity.flow` events carry their flows.
- A machine job that ended becomes the material it consumed (mass from the event, or length ×
  filament cross-section × density, then `modelled`), a part produced when it completed, the
  machine hours it used, and the energy it drew. A failed or cancelled job's material is waste.
  A figure the job names in `modelled` (a slicer's filament weight, a start taken from a
  receive time) gives `modelled` flows: `measured` is what a machine counted (its clock, its
  extruder, its meter) or a scale weighed, never an estimate.
- An energy meter's delta is electricity consumed; a cumulative counter becomes the difference
  to the device's previous reading (see `counter_delta`; the stateful part is in `meters`).
- A scale's reading is material in (consumed) or out (discarded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from fabcity.core.errors import Invalid
from fabcity.core.models import MICRO
from fabcity.flows.units import to_canonical
from schemas.events import (
    Action,
    CloudEvent,
    EventType,
    Fate,
    FlowData,
    JobStatus,
    MachineJobData,
    MeterReadingData,
    Ring,
    ScaleReadingData,
)
from schemas.fast import FastFlow, Read

# g/cm³, for turning a filament length into a mass when the job does not report one.
DENSITY_G_CM3 = {
    "pla": 1.24,
    "petg": 1.27,
    "rpetg": 1.27,
    "abs": 1.04,
    "asa": 1.07,
    "tpu": 1.21,
    "pa": 1.14,
    "nylon": 1.14,
    "pc": 1.20,
}
DEFAULT_DENSITY = 1.24
DEFAULT_FILAMENT_DIAMETER_MM = 1.75
# What a machine of a kind consumes when its settings do not say.
MATERIAL_OF_KIND = {"printer": "filament", "laser": "wood", "cnc": "metal"}


class ResourceInfo(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def secondary(self) -> bool: ...


class PlainResource(NamedTuple):
    """A resource of the registry as the flows' path reads it: no ORM attribute lookups."""

    name: str
    unit: str
    secondary: bool


@dataclass(frozen=True)
class DeviceInfo:
    id: int
    kind: str
    settings: dict[str, Any]


class DerivedFlow(NamedTuple):
    """A flow as stored, in the `flows` table's column order after its keys. A tuple: ingest
    makes one or more per event, and a tuple is built in a fraction of a frozen dataclass's
    time."""

    action: str
    resource: str
    amount: int  # millionths of the canonical unit
    ring: str
    fate: str
    recycled: bool
    material: str | None
    design_url: str | None
    job: str | None
    state: str
    # A count whose mass came with it (`mass_kg`): that mass is a flow of its own, so no
    # design's mass is modelled for the count.
    weighed: bool = False


# What a 64-bit column holds, with room for sums of a thousand such values.
MAX_AMOUNT = 2**63 // 1000


def micro(quantity: float) -> int:
    amount = round(quantity * MICRO)
    if abs(amount) > MAX_AMOUNT:
        # A unit with a large prefix can carry a valid quantity past what is stored.
        raise Invalid(f"quantity {quantity:g} in the canonical unit is too large to store")
    return amount


def state_of(device: DeviceInfo | None) -> str:
    """A device's own report is `measured`; what people post for a site is `reported`."""
    return "measured" if device is not None else "reported"


def derive(
    event: Read | CloudEvent, resources: dict[str, ResourceInfo], device: DeviceInfo | None
) -> list[DerivedFlow]:
    """The flows an event carries or implies, each in its resource's canonical unit.

    Raises `Invalid` (naming the flow) for an unknown resource or a unit that cannot be
    converted exactly. A meter's cumulative counter yields nothing here (see `meters`).
    """
    if event.type is EventType.flow:
        return carried(event.flows if isinstance(event, Read) else event.flows(), resources, device)
    if device is None:
        return []
    if isinstance(event, Read):
        assert event.event is not None, "only flows are read without the models"
        event = event.event
    if event.type is EventType.machine_job:
        return job_flows(event.data, device, resources, event.id)
    if event.type is EventType.meter_reading:
        data: MeterReadingData = event.data
        if data.energy_kwh is None:
            return []
        return [electricity(data.energy_kwh, device)]
    if event.type is EventType.scale_reading:
        return scale_flows(event.data, device, resources)
    return []


def carried(
    flows: Sequence[FlowData | FastFlow],
    resources: dict[str, ResourceInfo],
    device: DeviceInfo | None,
) -> list[DerivedFlow]:
    """The flows a `fabcity.flow` event carries, normalised. A count that carries its mass
    (`mass_kg`) is two flows: the count, and the mass of what it is made of (`material`)."""
    state, count = state_of(device), len(flows)
    if count == 1 and flows[0].mass_kg is None:
        return [_normalise(flows[0], 0, 1, resources, state)]
    out: list[DerivedFlow] = []
    for i, f in enumerate(flows):
        flow = _normalise(f, i, count, resources, state)
        if f.mass_kg is None:
            out.append(flow)
        else:
            out.extend(_weighed(f, flow, i, count, resources))
    return out


# Things counted that may come with their mass: made, repaired, used up or thrown away.
_WEIGHABLE = frozenset({"produce", "modify", "consume", "discard"})


def _weighed(
    given: FlowData | FastFlow,
    flow: DerivedFlow,
    index: int,
    count: int,
    resources: dict[str, ResourceInfo],
) -> list[DerivedFlow]:
    """A count and its mass: the count marked weighed, and a flow of the same action, ring
    and fate of the mass resource `material` names, in kg."""
    where = _where(index, count)
    if resources[flow.resource].unit != "count":
        raise Invalid(
            f"{where}mass_kg applies to things counted; the quantity of {flow.resource!r} is "
            "its amount already"
        )
    if flow.action not in _WEIGHABLE:
        raise Invalid(f"{where}mass_kg applies to {', '.join(sorted(_WEIGHABLE))} flows")
    name = (given.material or "").lower()
    material = resources.get(name)
    if material is None or material.unit != "kg":
        raise Invalid(
            f"{where}mass_kg needs `material` to name a resource measured in kg (what the "
            f"things are made of, e.g. `wood`), not {given.material!r}: the mass is counted as "
            "that material"
        )
    assert given.mass_kg is not None  # only weighed flows come here
    mass = flow._replace(
        resource=material.name,
        amount=micro(given.mass_kg),
        recycled=flow.recycled or material.secondary,
        design_url=None,  # the design is the count's: it is counted once
    )
    return [flow._replace(weighed=True), mass]


# The plain string of each enum member: on every flow's path, and a dict lookup costs a
# fraction of an enum's `.value`.
_PLAIN: dict[str, str] = {m: m.value for e in (Action, Ring, Fate) for m in e}


def _where(index: int, count: int) -> str:
    return f"data[{index}]: " if count > 1 else "data: "


def _normalise(
    flow: FlowData | FastFlow,
    index: int,
    count: int,
    resources: dict[str, ResourceInfo],
    state: str,
) -> DerivedFlow:
    resource = resources.get(flow.resource)
    if resource is None:
        raise Invalid(
            f"{_where(index, count)}unknown resource {flow.resource!r}; "
            "see /v1/resources for the registry"
        )
    try:
        quantity = to_canonical(flow.quantity, flow.unit, flow.resource, resource.unit)
    except Invalid as exc:
        raise Invalid(_where(index, count) + exc.detail) from exc
    # Positional: keywords would double the cost of making the tuple.
    return DerivedFlow(
        _PLAIN[flow.action],
        resource.name,
        micro(quantity),
        _PLAIN[flow.ring],
        _PLAIN[flow.fate] if flow.fate else "",
        bool(flow.recycled) or resource.secondary,
        flow.material,
        flow.design.url if flow.design else None,
        flow.job,
        state,
    )


def _material_resource(
    device: DeviceInfo, material: str | None, resources: dict[str, ResourceInfo]
) -> str | None:
    named = device.settings.get("resource")
    if isinstance(named, str) and named in resources:
        return named
    if material and material.lower() in resources:
        return material.lower()
    default = MATERIAL_OF_KIND.get(device.kind)
    return default if default in resources else None


def filament_mass_kg(length_mm: float, diameter_mm: float, density_g_cm3: float) -> float:
    """Mass of a filament length: π (d/2)² × length × density."""
    volume_cm3 = math.pi * (diameter_mm / 2) ** 2 * length_mm / 1000
    return volume_cm3 * density_g_cm3 / 1000


def job_flows(
    job: MachineJobData, device: DeviceInfo, resources: dict[str, ResourceInfo], job_id: str
) -> list[DerivedFlow]:
    settings = device.settings
    material = job.material or settings.get("material")
    base = DerivedFlow(
        action="consume",
        resource="",
        amount=0,
        ring=str(settings.get("input_ring", "beyond")),
        fate="",
        recycled=bool(settings.get("recycled", False)),
        material=material,
        design_url=job.design.url if job.design else None,
        job=job_id,
        state="measured",
    )
    flows: list[DerivedFlow] = []
    estimates = set(job.modelled or ())
    resource = _material_resource(device, material, resources)
    mass, state = job.mass_kg, "modelled" if "mass_kg" in estimates else "measured"
    if mass is None and job.length_mm is not None and resource == "filament":
        density = settings.get("density_g_cm3") or DENSITY_G_CM3.get(
            (material or "").lower(), DEFAULT_DENSITY
        )
        diameter = settings.get("filament_diameter_mm") or DEFAULT_FILAMENT_DIAMETER_MM
        mass, state = filament_mass_kg(job.length_mm, float(diameter), float(density)), "modelled"
    if resource is not None and mass is not None and mass > 0:
        consumed = base._replace(
            resource=resource,
            amount=micro(mass),
            state=state,
            recycled=base.recycled or resources[resource].secondary,
        )
        flows.append(consumed._replace(design_url=None))
        if job.status is not JobStatus.completed:
            # A failed print's plastic is waste; where it goes is not known.
            flows.append(consumed._replace(action="discard", ring="city", design_url=None))
    if job.status is JobStatus.completed and "part" in resources:
        flows.append(
            base._replace(
                action="produce", resource="part", amount=MICRO, ring="city", recycled=False
            )
        )
    hours = (job.ended - job.started).total_seconds() / 3600
    if hours > 0 and "machine_hours" in resources:
        flows.append(
            base._replace(
                action="use",
                resource="machine_hours",
                amount=micro(hours),
                ring="site",
                recycled=False,
                design_url=None,
                state="modelled" if "started" in estimates else "measured",
            )
        )
    if job.energy_kwh:
        energy = electricity(job.energy_kwh, device)._replace(job=job_id)
        if "energy_kwh" in estimates:
            energy = energy._replace(state="modelled")
        flows.append(energy)
    return flows


def electricity(kwh: float, device: DeviceInfo) -> DerivedFlow:
    return DerivedFlow(
        action="consume",
        resource="electricity",
        amount=micro(kwh),
        ring=str(device.settings.get("energy_ring", "region")),
        fate="",
        recycled=False,
        material=None,
        design_url=None,
        job=None,
        state="measured",
    )


def counter_delta(previous_total: float | None, total: float) -> float | None:
    """Energy used since the previous reading of a cumulative counter.

    None for the first reading (no baseline). A counter that went down was reset (device
    reset, `EnergyReset`): what it shows now was used since the reset, never a negative.
    """
    if previous_total is None:
        return None
    return total - previous_total if total >= previous_total else total


def scale_flows(
    reading: ScaleReadingData, device: DeviceInfo, resources: dict[str, ResourceInfo]
) -> list[DerivedFlow]:
    resource = _material_resource(device, reading.material, resources) or "plastic"
    if resource not in resources or reading.net_kg <= 0:
        return []
    settings = device.settings
    inbound = reading.direction == "in"
    return [
        DerivedFlow(
            action="consume" if inbound else "discard",
            resource=resource,
            amount=micro(reading.net_kg),
            ring=str(settings.get("input_ring", "city")) if inbound else "city",
            fate="" if inbound else str(settings.get("fate", "")),
            recycled=bool(settings.get("recycled", False)) or resources[resource].secondary,
            material=reading.material,
            design_url=None,
            job=None,
            state="measured",
        )
    ]
