"""Dirty windows: which (city, day, hour) rollups must be rebuilt from all their flows.

New events are added to the rollups (`fabcity.rollups.pending`); a window is marked dirty
when flows it already held changed: a meter reading settled between two others, a design's
registered data changed. The mark is made in the transaction that changes the flows. A
recompute claims windows and deletes the marks in its own transaction, so a mark made while it
runs survives it (the marking insert waits on the deleted row's lock and then inserts afresh);
and a mark that was there already is locked by the marking until it commits, so no recompute
claims it in between.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date

from sqlalchemy import and_, delete, or_, select, text
from sqlalchemy.orm import Session

from fabcity.core.db import advisory_lock, is_postgres
from fabcity.core.models import DirtyWindow, Flow
from fabcity.core.sql import insert_ignore

# City id, local day, hour key: the clock hour, or 24 more for the second pass of an hour the
# clock repeats (`fabcity.core.calendar.hour_key`), so that every window is a real hour.
Window = tuple[int, date, int]


def mark_dirty(session: Session, windows: Iterable[Window]) -> None:
    marks = sorted(set(windows))  # one lock order for concurrent writers
    if not marks:
        return
    if is_postgres(session):
        # One statement for the whole batch, not one execution per window through the ORM.
        # A mark already there is written again, not left alone: the write locks it until
        # this transaction ends, so a recompute (`claim_dirty`, SKIP LOCKED) cannot take it
        # and rebuild the window from what it sees before this change commits, leaving no
        # mark for the change (DO NOTHING locks nothing).
        cities, days, hours = (list(column) for column in zip(*marks, strict=True))
        session.execute(
            text(
                "INSERT INTO dirty_windows (city_id, day, hour) "
                "SELECT * FROM unnest(CAST(:c AS integer[]), CAST(:d AS date[]), "
                "CAST(:h AS integer[])) ON CONFLICT (city_id, day, hour) "
                "DO UPDATE SET hour = EXCLUDED.hour"
            ),
            {"c": cities, "d": days, "h": hours},
        )
        return
    rows = [{"city_id": c, "day": d, "hour": h} for c, d, h in marks]
    session.execute(insert_ignore(session, DirtyWindow, ["city_id", "day", "hour"]), rows)


# A design's registered data (mass, licence) is read by every recompute that sums flows of it.
# A flow stored while a design changes, in a window that held none of it, is not among the
# windows a registration can see to mark; so recomputes hold this lock shared while they
# claim and sum, and a registration takes it exclusive before it marks. A recompute that began
# first has finished, and its windows are marked; one that begins later reads the new data.
DESIGNS_LOCK_SPACE = 0x0FAB_DE51  # one key, 0: all designs


def lock_designs(session: Session, shared: bool) -> None:
    """Hold designs' registered data still (shared) or changing (exclusive) until commit."""
    advisory_lock(session, DESIGNS_LOCK_SPACE, [0], shared)


def mark_design_dirty(session: Session, url: str) -> None:
    """Mark every window with flows of a design, whose registered data just changed."""
    lock_designs(session, shared=False)
    made = select(Flow.city_id, Flow.day, Flow.hour).where(Flow.design_url == url).distinct()
    mark_dirty(session, [(c, d, h) for c, d, h in session.execute(made)])


def claim_dirty(session: Session, limit: int, skip: Collection[int] = ()) -> list[Window]:
    """Take up to `limit` dirty windows, none of the cities in `skip`; concurrent workers get
    disjoint sets on PostgreSQL."""
    query = (
        select(DirtyWindow.city_id, DirtyWindow.day, DirtyWindow.hour)
        .order_by(DirtyWindow.city_id, DirtyWindow.day, DirtyWindow.hour)
        .limit(limit)
    )
    if skip:
        query = query.where(DirtyWindow.city_id.not_in(sorted(skip)))
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    claimed = [(c, d, h) for c, d, h in session.execute(query)]
    if claimed:
        session.execute(
            delete(DirtyWindow).where(
                or_(
                    *(
                        and_(DirtyWindow.city_id == c, DirtyWindow.day == d, DirtyWindow.hour == h)
                        for c, d, h in claimed
                    )
                )
            )
        )
    return claimed
