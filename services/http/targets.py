"""Targets per city and metric (`/v1/cities/{city}/targets`): planners and admins set them,
whoever reads the city reads them, and the dashboard draws them with the gap."""

from __future__ import annotations

from fastapi import APIRouter, Response

from fabcity.core.errors import Invalid
from fabcity.read.metrics import METRICS
from fabcity.registry import entries, targets
from schemas import api
from services.http.dependencies import PrincipalDep, SessionDep

router = APIRouter(prefix="/v1", tags=["targets"])


def _unit(metric: str) -> str:
    known = METRICS.get(metric)
    if known is None:
        raise Invalid(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return known.unit


@router.get("/cities/{city}/targets", response_model=list[api.Target])
def list_targets(city: str, s: SessionDep) -> list[api.Target]:
    """The city's targets, one per metric."""
    found = entries.get_city(s, city)
    return [
        api.Target(
            metric=t.metric,
            unit=METRICS[t.metric].unit if t.metric in METRICS else "",
            direction=t.direction,
            value=t.value,
            due=t.due,
            note=t.note,
            updated_at=t.updated_at,
        )
        for t in targets.list_targets(s, found)
    ]


@router.put(
    "/cities/{city}/targets/{metric}",
    response_model=api.Target,
    responses={201: {"description": "A new target"}, 200: {"description": "Replaced"}},
)
def set_target(
    city: str, metric: str, body: api.TargetIn, s: SessionDep, who: PrincipalDep, response: Response
) -> api.Target:
    """Set the city's target for a metric (replacing the one it had), e.g. `local_input_share`
    at least 0.5 by 2030-12-31. A share is written between 0 and 1."""
    unit = _unit(metric)
    target, created = targets.set_target(
        s, entries.get_city(s, city), metric, unit, body, who.key_id
    )
    response.status_code = 201 if created else 200
    return api.Target(
        metric=metric,
        unit=unit,
        direction=target.direction,
        value=target.value,
        due=target.due,
        note=target.note,
        updated_at=target.updated_at,
    )


@router.delete("/cities/{city}/targets/{metric}", status_code=204)
def remove_target(city: str, metric: str, s: SessionDep) -> Response:
    targets.remove_target(s, entries.get_city(s, city), metric)
    return Response(status_code=204)
