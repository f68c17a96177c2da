"""Official statistics a city uploads for a year, and the accounts derived from them.

Numbers are `Decimal` from the request to the answer: tonnages of a city reach 10⁷ and more,
where a float would round away the units a statistics office published.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from pydantic import ValidationError
from sqlalchemy.orm import Session

from fabcity.core.errors import Invalid, NotFound, one_line
from fabcity.core.models import City, CityStatistics
from fabcity.registry import changes
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
        for name, row in sorted((body.mfa or {}).items())
    }
    # No table (or an empty one) is not a table of zeros: every account made of it is null.
    de = imp = exp = dmi = dmc = ptb = None
    if categories:
        de = sum((c.de for c in categories.values()), Decimal(0))
        imp = sum((c.imp for c in categories.values()), Decimal(0))
        exp = sum((c.exp for c in categories.values()), Decimal(0))
        dmi, dmc, ptb = de + imp, de + imp - exp, imp - exp
    u = cmu = None
    if body.cmu is not None:
        # U = RCV_R − IMP_w + EXP_w: waste recycled at home, less what came in to be
        # recycled, plus what went out to be recycled.
        u = body.cmu.rcv_r - body.cmu.imp_w + body.cmu.exp_w
        cmu = _ratio(u, dmc + u) if dmc is not None else None
    per_person = None
    if body.population and dmc is not None:
        per_person = (dmc / body.population).quantize(RATIO_PLACES)
    sector_index = None
    if body.sectors:
        weights = sum((s.weight for s in body.sectors), Decimal(0))
        if weights:
            covered = sum((min(Decimal(1), s.share()) * s.weight for s in body.sectors), Decimal(0))
            sector_index = SectorIndex(
                value=(100 * covered / weights).quantize(RATIO_PLACES),
                sectors=len(body.sectors),
            )
    return StatisticsOut(
        inputs=body,
        accounts=Accounts(
            unit=body.unit, de=de, imp=imp, exp=exp, dmi=dmi, dmc=dmc, ptb=ptb,
            dmc_per_person=per_person, resource_productivity=_ratio(body.gdp, dmc)
            if body.gdp is not None and dmc is not None else None, u=u, cmu=cmu,
            by_category=categories,
        ),
        sector_self_sufficiency=sector_index,
    )  # fmt: skip


def put(
    session: Session, city: City, year: int, body: StatisticsIn, actor: str = "cli"
) -> StatisticsOut:
    """Store a year's statistics; what they replace is kept in the registry's log of changes,
    so a published figure can be traced to the table it came from."""
    row = session.get(CityStatistics, (city.id, year))
    payload = body.model_dump(mode="json")
    now = datetime.now(UTC)
    before = None if row is None else dict(row.body)
    if row is None:
        session.add(CityStatistics(city_id=city.id, year=year, body=payload, updated_at=now))
    else:
        row.body, row.updated_at = payload, now
    if before != payload:
        changes.log(
            session, city_id=city.id, entry="statistics", name=f"/{city.slug}/{year}",
            action="create" if before is None else "update", before=before, after=payload,
            actor=actor,
        )  # fmt: skip
    session.flush()
    return accounts(body)


def get(session: Session, city: City, year: int) -> StatisticsOut:
    row = session.get(CityStatistics, (city.id, year))
    if row is None:
        raise NotFound(f"no statistics for {city.slug!r} in {year}; PUT them first")
    try:
        stored = StatisticsIn.model_validate(row.body)
    except ValidationError as exc:
        # Stored under an older, laxer rule (a sector consumed nothing): say so, no 500.
        raise Invalid(
            f"the statistics of {city.slug!r} for {year} no longer hold together "
            f"({one_line(exc.errors(include_url=False))}); PUT them again"
        ) from exc
    return accounts(stored)
