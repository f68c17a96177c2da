"""Pending marks: stored events and flows not yet added to the rollups.

Ingest adds a mark per city in the transaction that stores the rows; a recompute claims marks
and deletes them in the transaction that adds their sums to the rollups, so every row is added
once. A recompute that rebuilds an hour from all its flows leaves out the rows that marks still
name (`unmarked`): those are added when their mark is claimed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, false, insert, or_, select
from sqlalchemy.orm import Session

from fabcity.core.db import is_postgres
from fabcity.core.models import Event, Flow, PendingRollup


@dataclass(frozen=True)
class Mark:
    city_id: int
    event_lo: int
    event_hi: int
    flow_lo: int | None
    flow_hi: int | None


_COLUMNS = ("city_id", "event_lo", "event_hi", "flow_lo", "flow_hi")


def add(session: Session, marks: list[dict[str, Any]]) -> None:
    if not marks:
        return
    if not is_postgres(session):
        session.execute(insert(PendingRollup), marks)
        return
    # Once per batch: psycopg's own statement costs a third of the ORM's bulk insert.
    conn: Any = session.connection().connection.driver_connection
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {PendingRollup.__tablename__} ({', '.join(_COLUMNS)}) "
            "VALUES (%s, %s, %s, %s, %s)",
            [tuple(m[c] for c in _COLUMNS) for m in marks],
        )


def claim(session: Session, limit: int, skip: Collection[int] = ()) -> list[Mark]:
    """Take up to `limit` marks, oldest first, none of the cities in `skip`; concurrent
    workers get disjoint sets on PostgreSQL."""
    query = select(PendingRollup).order_by(PendingRollup.id).limit(limit)
    if skip:
        query = query.where(PendingRollup.city_id.not_in(sorted(skip)))
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    rows = session.scalars(query).all()
    if rows:
        session.execute(delete(PendingRollup).where(PendingRollup.id.in_([r.id for r in rows])))
    return [Mark(r.city_id, r.event_lo, r.event_hi, r.flow_lo, r.flow_hi) for r in rows]


def restore(session: Session, marks: Sequence[Mark]) -> None:
    """Put claimed marks back, for a later recompute: their rows were not added."""
    add(session, [{c: getattr(m, c) for c in _COLUMNS} for m in marks])


def flows_of(marks: Iterable[Mark]) -> Any:
    """The flows the marks name."""
    return or_(
        false(),
        *(
            and_(
                Flow.city_id == m.city_id,
                Flow.id.between(m.flow_lo, m.flow_hi),
                Flow.event_pk.between(m.event_lo, m.event_hi),
            )
            for m in marks
            if m.flow_lo is not None
        ),
    )


def events_of(marks: Iterable[Mark]) -> Any:
    """The events the marks name."""
    return or_(
        false(),
        *(
            and_(Event.city_id == m.city_id, Event.id.between(m.event_lo, m.event_hi))
            for m in marks
        ),
    )


def unmarked(model: Any) -> Any:
    """Rows of `model` (Flow or Event) that no mark names: those already in the rollups."""
    p = PendingRollup
    if model is Flow:
        return ~exists().where(
            p.city_id == Flow.city_id,
            Flow.id.between(p.flow_lo, p.flow_hi),
            Flow.event_pk.between(p.event_lo, p.event_hi),
        )
    return ~exists().where(p.city_id == Event.city_id, Event.id.between(p.event_lo, p.event_hi))
