"""When the figures of a window last changed: NGSI-LD's `dateModified`.

The recompute writes, for each city-hour whose rollups it rebuilt, added to or filled, when it
did (`rollup_changes`, `fabcity.rollups.recompute.changed`): new events, a correction (which
changes the window of the event it corrects, wherever it lies itself), a design registered
after the things made of it, a device's settings or a city's zone changed. A window's time is
the latest of its hours'. Read from that small table, never from the events: the query side
reads rollups only. A site added changes the active sites of coverage without a recompute,
and so without moving it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fabcity.core import calendar, models
from fabcity.core.calendar import Interval

# A local hour of a local day: (day, hour key); the key is None when the windows are days or
# longer, which need no finer cut.
Slot = tuple[date, int | None]


def last_changes(
    session: Session, city_id: int, first: date, last: date, by_hour: bool
) -> dict[Slot, datetime]:
    """The latest change behind each day (or local hour) of [first, last] that has one."""
    change = models.RollupChange
    where = (change.city_id == city_id, change.day.between(first, last))
    if by_hour:
        rows = session.execute(select(change.day, change.hour, change.changed_at).where(*where))
        return {(day, hour): when for day, hour, when in rows}
    days = select(change.day, func.max(change.changed_at)).where(*where).group_by(change.day)
    return {(day, None): when for day, when in session.execute(days) if when is not None}


def window_modified(
    changes: dict[Slot, datetime], start: date | datetime, interval: Interval, zone: ZoneInfo
) -> datetime | None:
    """The latest change behind the window that starts at `start` (an hour's start is an
    instant, keyed in the city's `zone`); None when nothing is stored behind it."""
    slots: Iterable[Slot]
    if isinstance(start, datetime):
        hour = calendar.hour_at(start, zone)
        slots = [(hour.day, hour.key)]
    else:
        days = (calendar.next_start(start, interval) - start).days
        slots = [(start + timedelta(days=n), None) for n in range(days)]
    found = [changes[slot] for slot in slots if slot in changes]
    return max(found) if found else None
