"""Official statistics of a city's year, and the Material Circularity Indicator."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path

from fabcity.core.errors import Invalid, NotFound
from fabcity.core.models import Design
from fabcity.read import circularity
from fabcity.registry import entries, statistics
from schemas.statistics import MciIn, MciOut, StatisticsIn, StatisticsOut
from services.http.dependencies import PrincipalDep, RowId, SessionDep
from services.http.registry import actor

router = APIRouter(prefix="/v1", tags=["metrics"])

Year = Annotated[int, Path(ge=1900, le=2200)]


@router.put("/cities/{city}/statistics/{year}", response_model=StatisticsOut)
def put_statistics(
    city: str, year: Year, body: StatisticsIn, s: SessionDep, who: PrincipalDep
) -> StatisticsOut:
    """Store a year's official statistics; answers with the accounts derived from them. What
    they replace is kept in the city's log of changes (`/v1/cities/{city}/changes`)."""
    return statistics.put(s, entries.get_city(s, city), year, body, actor(who))


@router.get("/cities/{city}/statistics/{year}", response_model=StatisticsOut)
def get_statistics(city: str, year: Year, s: SessionDep) -> StatisticsOut:
    """DMI, DMC, PTB, DMC per person, resource productivity, CMU and the sector
    self-sufficiency index of a year, with the inputs they were computed from."""
    return statistics.get(s, entries.get_city(s, city), year)


def _mci(inputs: circularity.MciInputs) -> MciOut:
    result = circularity.mci(inputs)
    return MciOut(**asdict(result))


@router.post("/mci", response_model=MciOut)
def post_mci(body: MciIn) -> MciOut:
    """A quick Material Circularity Indicator: V, W, LFI, X and MCI."""
    return _mci(circularity.MciInputs(**body.model_dump()))


@router.get("/designs/{design_id}/mci", response_model=MciOut)
def design_mci(design_id: RowId, s: SessionDep) -> MciOut:
    """The MCI of a registered design, from its mass and its circularity data."""
    design = s.get(Design, design_id)
    if design is None:
        raise NotFound(f"no design {design_id}")
    if design.mass_kg is None or not design.circularity:
        lacking = "mass" if design.mass_kg is None else "circularity data"
        raise Invalid(f"design {design_id} has no {lacking}; import a manifest that gives it")
    data = {k.lower(): v for k, v in design.circularity.items()}
    data.setdefault("lifetime_ratio", data.pop("l_ratio", 1.0))
    data.setdefault("use_ratio", data.pop("u_ratio", 1.0))
    try:
        body = MciIn(mass=design.mass_kg, **data)
    except ValueError as exc:
        raise Invalid(f"design {design_id}'s circularity data is not usable: {exc}") from exc
    return _mci(circularity.MciInputs(**body.model_dump()))
