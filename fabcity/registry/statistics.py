"""Official statistics a city uploads for a year, and the accounts derived from them.

Numbers are `Decimal` from the request to the answer: tonnages of a city reach 10⁷ and more,
where a float would round away the units a statistics office published.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from fabcity.core.errors import NotFound
from fabcity.core.models import City, CityStatistics
from schemas.statistics import Accounts, Category, SectorIndex, StatisticsIn, StatisticsOut

RATIO_PLACES = Decimal("0.000001")


def _total(value: Decimal | dict[str, Decimal]) -> Decimal:
    """Imports and exports may come split by partner (abroad, rest of country)."""
    return sum(value.values(), Decimal(0)) if isinstance(value, dict) else value


def _ratio(part: Decimal, whole: Decimal) -> Decimal | None:
    return (part / whole).quantize(RATIO_PLACES) if whole else None


def accounts(body: StatisticsIn) -> StatisticsOut:
    """DMI, DMC, PTB, per person, RP, CMU and the sector self-sufficiency index."""
    categories = {
        name: Category(de=row.de, imp=_total(row.imp), exp=_total(row.exp))
        for name, row in sorted(body.mfa.items())
    }
    de = sum((c.de for c in categories.values()), Decimal(0))
    imp = sum((c.imp for c in categories.values()), Decimal(0))
    exp = sum((c.exp for c in categories.values()), Decimal(0))
    dmi, dmc, ptb = de + imp, de + imp - exp, imp - exp
    u = cmu = None
    if body.cmu is not None:
        # U = RCV_R − IMP_w + EXP_w: waste recycled at home, less what came in to be
        # recycled, plus what went out to be recycled.
        u = body.cmu.rcv_r - body.cmu.imp_w + body.cmu.exp_w
        cmu = _ratio(u, dmc + u)
    per_person = None
    if body.population:
        per_person = (dmc / body.population).quantize(RATIO_PLACES)
    sector_index = None
    if body.sectors:
        weights = sum((s.weight for s in body.sectors), Decimal(0))
        if weights:
            covered = sum(
                (min(Decimal(1), s.production / s.consumption) * s.weight
                 for s in body.sectors if s.consumption), Decimal(0),
            )  # fmt: skip
            sector_index = SectorIndex(
                value=(100 * covered / weights).quantize(RATIO_PLACES),
                sectors=len(body.sectors),
            )
    return StatisticsOut(
        inputs=body,
        accounts=Accounts(
            unit=body.unit, de=de, imp=imp, exp=exp, dmi=dmi, dmc=dmc, ptb=ptb,
            dmc_per_person=per_person, resource_productivity=_ratio(body.gdp, dmc)
            if body.gdp is not None else None, u=u, cmu=cmu, by_category=categories,
        ),
        sector_self_sufficiency=sector_index,
    )  # fmt: skip


def put(session: Session, city: City, year: int, body: StatisticsIn) -> StatisticsOut:
    row = session.get(CityStatistics, (city.id, year))
    payload = body.model_dump(mode="json")
    now = datetime.now(UTC)
    if row is None:
        session.add(CityStatistics(city_id=city.id, year=year, body=payload, updated_at=now))
    else:
        row.body, row.updated_at = payload, now
    session.flush()
    return accounts(body)


def get(session: Session, city: City, year: int) -> StatisticsOut:
    row = session.get(CityStatistics, (city.id, year))
    if row is None:
        raise NotFound(f"no statistics for {city.slug!r} in {year}; PUT them first")
    return accounts(StatisticsIn.model_validate(row.body))
