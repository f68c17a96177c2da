"""Dirty windows: which (city, day) rollups must be recomputed.

Ingest marks a window in the same transaction that stores the event. A recompute claims
windows and deletes the marks in its own transaction, so a mark made while it runs survives
it (the marking insert waits on the deleted row's lock and then inserts afresh).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from fabcity.db import is_postgres
from fabcity.models import DirtyWindow, Flow
from fabcity.sql import insert_ignore


def mark_dirty(session: Session, windows: Iterable[tuple[int, date]]) -> None:
    rows = [{"city_id": c, "day": d} for c, d in sorted(set(windows))]
    if rows:
        session.execute(insert_ignore(session, DirtyWindow, ["city_id", "day"]), rows)


def mark_design_dirty(session: Session, url: str) -> None:
    """Mark every window with flows of a design, whose registered data just changed."""
    made = select(Flow.city_id, Flow.day).where(Flow.design_url == url).distinct()
    mark_dirty(session, [(c, d) for c, d in session.execute(made)])


def claim_dirty(session: Session, limit: int) -> list[tuple[int, date]]:
    """Take up to `limit` dirty windows; concurrent workers get disjoint sets on PostgreSQL."""
    query = select(DirtyWindow.city_id, DirtyWindow.day).order_by(
        DirtyWindow.city_id, DirtyWindow.day
    )
    query = query.limit(limit)
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    claimed = [(c, d) for c, d in session.execute(query)]
    if claimed:
        session.execute(
            delete(DirtyWindow).where(tuple_(DirtyWindow.city_id, DirtyWindow.day).in_(claimed))
        )
    return claimed
