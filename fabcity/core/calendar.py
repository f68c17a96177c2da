"""The city's calendar: windows of an hour, a day, a week, a month or a year, in local time.

Rollups, queries, exports and rebuilds all cut time the same way, so the cut lives here.

Days, weeks, months and years are local calendar units: a day runs from local midnight to
local midnight, 23 or 25 hours on the days the clocks change. Hours are real hours: spans of
time, labelled with the offset in force. An hour is keyed within its local day by its clock
hour, 0-23, and by 24 more (24-47) for the second pass of an hour the clock shows twice when
it is put back: in Europe/Madrid on 2026-10-25, 02:30+02:00 falls in hour 2 and 02:30+01:00
in hour 26. A clock put forward skips an hour, which then has no window (Madrid, 2026-03-29,
has no hour 2). Where the clock moves by half an hour (Australia/Lord_Howe), the hour it cuts
is half an hour long: its window is what the clock shows of it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
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


SECOND_PASS = 24  # added to the clock hour of the second pass of a repeated hour
_HOUR = timedelta(hours=1)


def hour_key(local: datetime) -> int:
    """The key within its local day of the hour holding `local`, a time in the city's zone
    (`astimezone` sets `fold` on the second pass of a repeated hour)."""
    return local.hour + SECOND_PASS * local.fold


@dataclass(frozen=True)
class Hour:
    """One hour window of a local day: [start, end), both labelled with their offset."""

    day: date
    key: int
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        """Its length: 1, or 0.5 where a clock that moves by half an hour cuts it."""
        return (self.end - self.start).total_seconds() / 3600


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """Local midnight in UTC; a midnight the clock skips is the instant it skips it."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _label(instant: datetime, zone: ZoneInfo) -> datetime:
    """An instant in the city's time, with a fixed offset: aware datetimes sharing a
    `ZoneInfo` compare and hash by their wall clock, so 02:30+02:00 would equal
    02:30+01:00; with fixed offsets they compare as the instants they are."""
    local = instant.astimezone(zone)
    offset = local.utcoffset()
    assert offset is not None
    return local.replace(tzinfo=timezone(offset), fold=0)


@lru_cache(maxsize=8192)
def hours_of_day(day: date, zone: ZoneInfo) -> tuple[Hour, ...]:
    """The hour windows of a local day, in order: 24, or 23 or 25 when the clocks change
    (23.5 or 24.5 hours long where they move by half an hour)."""
    start, end = _midnight(day, zone), _midnight(day + timedelta(days=1), zone)
    offset = start.astimezone(zone).utcoffset()
    if end - start == 24 * _HOUR and (end - _HOUR).astimezone(zone).utcoffset() == offset:
        assert offset is not None
        fixed = timezone(offset)
        return tuple(
            Hour(day, h, (start + h * _HOUR).astimezone(fixed),
                 (start + (h + 1) * _HOUR).astimezone(fixed))
            for h in range(24)
        )  # fmt: skip
    # The clocks change today: the windows are the runs of instants sharing a key, found a
    # minute at a time and the change itself to the second (a zone's offset before 1900 may
    # hold seconds).
    cuts = [start]
    step = timedelta(minutes=1)
    previous, key = start, hour_key(start.astimezone(zone))
    at = start + step
    while at < end:
        now = hour_key(at.astimezone(zone))
        if now != key:
            lo, hi = previous, at  # key(lo) == key, key(hi) != key
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(microsecond=0) if mid.microsecond else mid
                if mid <= lo:
                    break
                if hour_key(mid.astimezone(zone)) == key:
                    lo = mid
                else:
                    hi = mid
            cuts.append(hi)
            key = now
        previous, at = at, at + step
    cuts.append(end)
    return tuple(
        Hour(day, hour_key(a.astimezone(zone)), _label(a, zone), _label(b, zone))
        for a, b in itertools.pairwise(cuts)
    )


def hour_window(day: date, key: int, zone: ZoneInfo) -> Hour:
    """The hour window of a local day with this key."""
    for hour in hours_of_day(day, zone):
        if hour.key == key:
            return hour
    raise ValueError(f"{day} has no hour {key} in {zone.key}")


def hour_at(instant: datetime, zone: ZoneInfo) -> Hour:
    """The hour window holding an instant (an aware datetime)."""
    local = instant.astimezone(zone)
    return hour_window(local.date(), hour_key(local), zone)
