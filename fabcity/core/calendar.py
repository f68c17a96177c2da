"""The city's calendar: windows of an hour, a day, a week, a month or a year, in local time.

Rollups, queries, exports and rebuilds all cut time the same way, so the cut lives here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Interval = Literal["hour", "day", "week", "month", "year"]

# The days a period may name. A window reaches at most a year past either end of a period,
# and local midnight at most a day past it in UTC: a year of room on either side keeps every
# window start, window end and UTC instant a `date` or `datetime` can hold.
FIRST_DAY = date(2, 1, 1)
LAST_DAY = date(9998, 12, 31)


def window_start(day: date, interval: Interval) -> date:
    """First day of the window holding `day` (weeks start on Monday, ISO 8601)."""
    if interval in ("day", "hour"):
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def next_start(start: date, interval: Interval) -> date:
    if interval in ("day", "hour"):
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    if interval == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start.replace(year=start.year + 1)


def window_starts(first: date, last: date, interval: Interval) -> list[date]:
    """Starts of every window that overlaps [first, last] (days, for intervals of a day up)."""
    starts = []
    day = window_start(first, interval)
    while day <= last:
        starts.append(day)
        day = next_start(day, interval)
    return starts


def count_windows(first: date, last: date, interval: Interval) -> int:
    """How many windows `window_starts(first, last, interval)` holds (24 for each day of
    hours), from the dates alone: a count that costs nothing however long the period."""
    if interval in ("day", "hour"):
        days = (last - first).days + 1
        return days * 24 if interval == "hour" else days
    if interval == "week":
        return (window_start(last, "week") - window_start(first, "week")).days // 7 + 1
    if interval == "month":
        return (last.year - first.year) * 12 + last.month - first.month + 1
    return last.year - first.year + 1


def hours_between(start: date, end: date, zone: ZoneInfo) -> float:
    """Hours from local midnight to local midnight: 23 or 25 on a daylight-saving day."""
    a = datetime(start.year, start.month, start.day, tzinfo=zone).astimezone(UTC)
    b = datetime(end.year, end.month, end.day, tzinfo=zone).astimezone(UTC)
    # Subtracting in UTC: two datetimes sharing one tzinfo subtract as wall-clock times.
    return (b - a).total_seconds() / 3600
