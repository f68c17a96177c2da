"""A city's targets: one per metric, at least (or at most) a value by a date.

Which metric names exist, and their units, is the read side's to say: the caller (the HTTP
layer) checks the name and passes its unit; here a target is stored, listed and removed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.errors import Invalid, NotFound
from schemas import api

# A share is a number between 0 and 1: a target of 50 for a share is a percentage typed.
RATIO_UNITS = frozenset({"ratio"})


def set_target(
    session: Session,
    city: models.City,
    metric: str,
    unit: str,
    body: api.TargetIn,
    key_id: int | None = None,
) -> tuple[models.Target, bool]:
    """The city's target for `metric`, created or replaced; and whether it was created."""
    if unit in RATIO_UNITS and not 0 <= body.value <= 1:
        raise Invalid(f"{metric} is a share between 0 and 1: write 0.5 for 50 %, not {body.value}")
    target = session.scalar(
        select(models.Target).where(
            models.Target.city_id == city.id, models.Target.metric == metric
        )
    )
    created = target is None
    if target is None:
        target = models.Target(city_id=city.id, metric=metric)
        session.add(target)
    target.direction = body.direction
    target.value = body.value
    target.due = body.due
    target.note = body.note
    target.set_by = key_id
    target.updated_at = datetime.now(UTC)
    session.flush()
    return target, created


def list_targets(session: Session, city: models.City) -> list[models.Target]:
    return list(
        session.scalars(
            select(models.Target)
            .where(models.Target.city_id == city.id)
            .order_by(models.Target.metric)
        )
    )


def remove_target(session: Session, city: models.City, metric: str) -> None:
    done = session.execute(
        delete(models.Target).where(
            models.Target.city_id == city.id, models.Target.metric == metric
        )
    )
    if not done.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"{city.slug} has no target for {metric}")
