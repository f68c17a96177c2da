"""`GET /v1/definitions`: what every metric means (fabcity.read.definitions), for the
dashboard's explanation page and for anyone who publishes a figure. Open to all: it holds no
city's data."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from fabcity.read.definitions import CONCEPTS, definitions
from schemas.api import Definitions, MetricDefinition

router = APIRouter(prefix="/v1", tags=["metrics"])


@router.get("/definitions", response_model=Definitions)
def metric_definitions() -> Definitions:
    """Each metric's plain name, what it says, its formula and sources; and what `state`,
    `range`, `confidence`, `partial` and coverage mean."""
    return Definitions(
        metrics=[MetricDefinition(**asdict(d)) for d in definitions()], concepts=CONCEPTS
    )
