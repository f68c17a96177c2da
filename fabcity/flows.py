"""Turning events into flows: pure functions, so a rebuild derives exactly what ingest did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fabcity.errors import Invalid
from fabcity.units import to_canonical
from schemas.events import CloudEvent, FlowData


class ResourceInfo(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def secondary(self) -> bool: ...


@dataclass(frozen=True)
class DerivedFlow:
    action: str
    resource: str
    quantity: float
    ring: str
    fate: str
    recycled: bool
    material: str | None
    design_url: str | None
    job: str | None
    state: str


def state_of(device_id: int | None) -> str:
    """A device's own report is `measured`; what people post for a site is `reported`."""
    return "measured" if device_id is not None else "reported"


def derive(
    event: CloudEvent, resources: dict[str, ResourceInfo], device_id: int | None
) -> list[DerivedFlow]:
    """The flows an event carries, each in its resource's canonical unit.

    Raises `Invalid` (naming the flow) for an unknown resource or a unit that cannot be
    converted exactly. Device job, meter and scale events yield no flows yet.
    """
    state = state_of(device_id)
    flows = event.flows()
    return [_normalise(f, i, len(flows), resources, state) for i, f in enumerate(flows)]


def _normalise(
    flow: FlowData, index: int, count: int, resources: dict[str, ResourceInfo], state: str
) -> DerivedFlow:
    where = f"data[{index}]: " if count > 1 else "data: "
    resource = resources.get(flow.resource)
    if resource is None:
        raise Invalid(
            f"{where}unknown resource {flow.resource!r}; see /v1/resources for the registry"
        )
    try:
        quantity = to_canonical(flow.quantity, flow.unit, flow.resource, resource.unit)
    except Invalid as exc:
        raise Invalid(where + exc.detail) from exc
    return DerivedFlow(
        action=flow.action.value,
        resource=resource.name,
        quantity=quantity,
        ring=flow.ring.value,
        fate=flow.fate.value if flow.fate else "",
        recycled=bool(flow.recycled) or resource.secondary,
        material=flow.material,
        design_url=flow.design.url if flow.design else None,
        job=flow.job,
        state=state,
    )
