"""Recomputing the rollups of dirty windows from the stored flows and events.

A window's rollup rows are deleted and rebuilt with one `INSERT … SELECT … GROUP BY`, so the
result depends only on what is stored: incremental recompute and a full rebuild agree.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Boolean, case, delete, func, insert, literal, select, tuple_
from sqlalchemy.orm import Session

from fabcity import windows
from fabcity.models import Event, Flow, FlowRollup, SiteActivity


def recompute(session: Session, claimed: list[tuple[int, date]]) -> None:
    """Rebuild the rollups of the given (city, day) windows."""
    if not claimed:
        return
    in_windows = tuple_(Flow.city_id, Flow.day).in_(claimed)
    session.execute(
        delete(FlowRollup).where(tuple_(FlowRollup.city_id, FlowRollup.day).in_(claimed))
    )
    with_design = case((Flow.design_url.is_(None), literal(False)), else_=literal(True)).cast(
        Boolean
    )
    dims = (
        Flow.city_id,
        Flow.day,
        Flow.site_id,
        Flow.action,
        Flow.resource,
        Flow.ring,
        Flow.fate,
        Flow.recycled,
        with_design,
        Flow.state,
    )
    flows = select(*dims, func.sum(Flow.quantity), func.count()).where(in_windows).group_by(*dims)
    session.execute(
        insert(FlowRollup).from_select(
            [
                "city_id",
                "day",
                "site_id",
                "action",
                "resource",
                "ring",
                "fate",
                "recycled",
                "with_design",
                "state",
                "quantity",
                "flows",
            ],
            flows,
        )
    )
    session.execute(
        delete(SiteActivity).where(tuple_(SiteActivity.city_id, SiteActivity.day).in_(claimed))
    )
    activity = (
        select(Event.city_id, Event.day, Event.site_id, func.count())
        .where(tuple_(Event.city_id, Event.day).in_(claimed))
        .group_by(Event.city_id, Event.day, Event.site_id)
    )
    session.execute(
        insert(SiteActivity).from_select(["city_id", "day", "site_id", "events"], activity)
    )


def recompute_dirty(session: Session, limit: int) -> int:
    """Claim up to `limit` dirty windows and recompute them; returns how many."""
    claimed = windows.claim_dirty(session, limit)
    recompute(session, claimed)
    return len(claimed)
