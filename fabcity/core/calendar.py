"""The city's calendar: windows of an hour, a day, a week, a month or a year, in local time.

Rollups, queries, exports and rebuilds all cut time the same way, so the cut lives here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Interval = Literal["hour", "day", "week", "month", "year"]


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


def hours_between(start: date, end: date, zone: ZoneInfo) -> float:
    """Hours from local midnight to local midnight: 23 or 25 on a daylight-saving day."""
    a = datetime(start.year, start.month, start.day, tzinfo=zone).astimezone(UTC)
    b = datetime(end.year, end.month, end.day, tzinfo=zone).astimezone(UTC)
    # Subtracting in UTC: two datetimes sharing one tzinfo subtract as wall-clock times.
    return (b - a).total_seconds() / 3600
