"""The city's calendar: the windows metrics are read over, and the hours each one holds."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import get_args
from zoneinfo import ZoneInfo

import pytest

from fabcity.core.calendar import (
    Interval,
    hour_at,
    hour_key,
    hours_between,
    hours_of_day,
    next_start,
    window_start,
    window_starts,
)

DAY = date(2026, 3, 10)
MADRID = ZoneInfo("Europe/Madrid")


class TestWindowStart:
    """`window_start` and `next_start`: where a window holding a day begins, and the next."""

    @pytest.mark.parametrize("interval", ["day", "hour"])
    def test_day_and_hour_windows_start_on_the_day(self, interval: Interval) -> None:
        assert window_start(DAY, interval) == DAY
        assert next_start(DAY, interval) == DAY + timedelta(days=1)

    @pytest.mark.parametrize(
        ("day", "monday"),
        [
            (date(2026, 3, 9), date(2026, 3, 9)),  # a Monday is its own start
            (date(2026, 3, 10), date(2026, 3, 9)),
            (date(2026, 3, 15), date(2026, 3, 9)),  # Sunday belongs to the week before it
            (date(2026, 3, 16), date(2026, 3, 16)),
            (date(2026, 1, 1), date(2025, 12, 29)),  # a week across the new year
            (date(2024, 3, 1), date(2024, 2, 26)),  # a week across a leap day
        ],
    )
    def test_week_starts_on_the_iso_monday(self, day: date, monday: date) -> None:
        start = window_start(day, "week")
        assert start == monday
        assert start.isoweekday() == 1
        assert start.isocalendar()[:2] == day.isocalendar()[:2]
        assert next_start(start, "week") == monday + timedelta(days=7)

    @pytest.mark.parametrize(
        ("day", "first", "following"),
        [
            (date(2026, 3, 10), date(2026, 3, 1), date(2026, 4, 1)),
            (date(2026, 3, 1), date(2026, 3, 1), date(2026, 4, 1)),
            (date(2024, 2, 29), date(2024, 2, 1), date(2024, 3, 1)),
            (date(2025, 2, 28), date(2025, 2, 1), date(2025, 3, 1)),
            (date(2026, 1, 31), date(2026, 1, 1), date(2026, 2, 1)),
            (date(2026, 12, 31), date(2026, 12, 1), date(2027, 1, 1)),
        ],
    )
    def test_month_starts_on_the_first(self, day: date, first: date, following: date) -> None:
        assert window_start(day, "month") == first
        assert next_start(first, "month") == following

    def test_year_starts_on_the_first_of_january(self) -> None:
        assert window_start(date(2026, 12, 31), "year") == date(2026, 1, 1)
        assert window_start(date(2024, 2, 29), "year") == date(2024, 1, 1)
        assert next_start(date(2024, 1, 1), "year") == date(2025, 1, 1)


class TestWindowStarts:
    """`window_starts`: the starts of every window over a range of days."""

    def test_day_window_starts_cover_every_day_inclusive(self) -> None:
        assert window_starts(date(2026, 2, 27), date(2026, 3, 2), "day") == [
            date(2026, 2, 27),
            date(2026, 2, 28),
            date(2026, 3, 1),
            date(2026, 3, 2),
        ]
        assert window_starts(date(2024, 2, 28), date(2024, 3, 1), "day") == [
            date(2024, 2, 28),
            date(2024, 2, 29),
            date(2024, 3, 1),
        ]

    def test_a_single_day_range_is_one_window(self) -> None:
        assert window_starts(DAY, DAY, "day") == [DAY]

    def test_week_window_starts_begin_on_the_monday_before_the_first_day(self) -> None:
        # 2026-03-11 is a Wednesday; 2026-03-23 a Monday, so it opens a third window.
        assert window_starts(date(2026, 3, 11), date(2026, 3, 23), "week") == [
            date(2026, 3, 9),
            date(2026, 3, 16),
            date(2026, 3, 23),
        ]

    def test_week_window_starts_roll_over_the_new_year(self) -> None:
        assert window_starts(date(2025, 12, 24), date(2026, 1, 6), "week") == [
            date(2025, 12, 22),
            date(2025, 12, 29),
            date(2026, 1, 5),
        ]

    def test_month_window_starts_roll_over_december_into_january(self) -> None:
        assert window_starts(date(2025, 11, 15), date(2026, 2, 1), "month") == [
            date(2025, 11, 1),
            date(2025, 12, 1),
            date(2026, 1, 1),
            date(2026, 2, 1),
        ]

    @pytest.mark.parametrize("year", [2024, 2028, 2100])
    def test_month_window_starts_step_over_february(self, year: int) -> None:
        assert window_starts(date(year, 1, 31), date(year, 4, 1), "month") == [
            date(year, 1, 1),
            date(year, 2, 1),
            date(year, 3, 1),
            date(year, 4, 1),
        ]

    def test_month_window_starts_over_a_whole_year_are_twelve_firsts(self) -> None:
        starts = window_starts(date(2026, 1, 31), date(2026, 12, 31), "month")
        assert starts == [date(2026, m, 1) for m in range(1, 13)]

    def test_year_window_starts(self) -> None:
        assert window_starts(date(2023, 6, 1), date(2025, 1, 1), "year") == [
            date(2023, 1, 1),
            date(2024, 1, 1),
            date(2025, 1, 1),
        ]

    def test_year_window_starts_from_a_leap_day(self) -> None:
        # Stepping the year of Feb 29 would fail; the window start is Jan 1, so it must not.
        assert window_starts(date(2024, 2, 29), date(2025, 3, 1), "year") == [
            date(2024, 1, 1),
            date(2025, 1, 1),
        ]

    @pytest.mark.parametrize("interval", get_args(Interval))
    def test_every_day_falls_in_exactly_one_listed_window(self, interval: Interval) -> None:
        first, last = date(2023, 12, 20), date(2024, 3, 5)
        starts = window_starts(first, last, interval)
        assert starts == sorted(set(starts))
        day = first
        while day <= last:
            assert window_start(day, interval) in starts
            day += timedelta(days=1)
        # No window lies wholly outside the range.
        assert starts[0] <= first
        assert all(s <= last for s in starts)

    def test_windows_of_an_empty_range_are_none(self) -> None:
        assert window_starts(date(2026, 3, 2), date(2026, 3, 1), "day") == []


class TestHoursBetween:
    """`hours_between`: the hours of a window in local time, daylight saving included."""

    def test_an_ordinary_day_has_24_hours(self) -> None:
        assert hours_between(date(2026, 3, 10), date(2026, 3, 11), MADRID) == 24.0

    def test_the_spring_daylight_saving_day_has_23_hours(self) -> None:
        # Europe/Madrid: 2026-03-29, the last Sunday of March, skips 02:00 to 03:00.
        assert hours_between(date(2026, 3, 29), date(2026, 3, 30), MADRID) == 23.0

    def test_the_autumn_daylight_saving_day_has_25_hours(self) -> None:
        # Europe/Madrid: 2026-10-25, the last Sunday of October, repeats 02:00 to 03:00.
        assert hours_between(date(2026, 10, 25), date(2026, 10, 26), MADRID) == 25.0

    def test_windows_across_a_daylight_saving_change(self) -> None:
        # The week of 23 March 2026 and the month of March lose the hour; October gains one.
        assert hours_between(date(2026, 3, 23), date(2026, 3, 30), MADRID) == 7 * 24 - 1
        assert hours_between(date(2026, 3, 1), date(2026, 4, 1), MADRID) == 31 * 24 - 1
        assert hours_between(date(2026, 10, 1), date(2026, 11, 1), MADRID) == 31 * 24 + 1

    def test_a_year_has_all_its_hours_back(self) -> None:
        assert hours_between(date(2026, 1, 1), date(2027, 1, 1), MADRID) == 365 * 24
        assert hours_between(date(2024, 1, 1), date(2025, 1, 1), MADRID) == 366 * 24


# Both changes of clocks of 2026 in zones that move by an hour, by an hour on a half-hour
# offset, by half an hour, at midnight, and in one that never moves:
# (zone, day, hours in the day, hour windows, the windows that are not a clock hour's first pass
# as (key, start, end)).
CHANGES = [
    # EU: forward at 02:00+01:00 on the last Sunday of March, back at 03:00+02:00 in October.
    ("Europe/Madrid", date(2026, 3, 29), 23, 23, []),
    ("Europe/Madrid", date(2026, 10, 25), 25, 25,
     [(26, "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00")]),
    # US: forward at 02:00 on the second Sunday of March, back at 02:00 on the first of November.
    ("America/New_York", date(2026, 3, 8), 23, 23, []),
    ("America/New_York", date(2026, 11, 1), 25, 25,
     [(25, "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00")]),
    # +09:30 in winter, +10:30 in summer: back at 03:00 on the first Sunday of April, forward
    # at 02:00 on the first Sunday of October. The hours start on the clock's hour, 30 minutes
    # off UTC's.
    ("Australia/Adelaide", date(2026, 4, 5), 25, 25,
     [(26, "2026-04-05T02:00:00+09:30", "2026-04-05T03:00:00+09:30")]),
    ("Australia/Adelaide", date(2026, 10, 4), 23, 23, []),
    # +10:30 and +11:00: back from 02:00 to 01:30, forward from 02:00 to 02:30; the hour the
    # change cuts is half an hour long.
    ("Australia/Lord_Howe", date(2026, 4, 5), 24.5, 25,
     [(25, "2026-04-05T01:30:00+10:30", "2026-04-05T02:00:00+10:30")]),
    ("Australia/Lord_Howe", date(2026, 10, 4), 23.5, 24,
     [(2, "2026-10-04T02:30:00+11:00", "2026-10-04T03:00:00+11:00")]),
    # Back from 01:00 to 00:00: the day starts with the hour it repeats.
    ("America/Havana", date(2026, 11, 1), 25, 25,
     [(24, "2026-11-01T00:00:00-05:00", "2026-11-01T01:00:00-05:00")]),
    # +05:30 all year: every day has 24 hours, on the clock's hours.
    ("Asia/Kolkata", date(2026, 10, 25), 24, 24, []),
]  # fmt: skip


class TestRealHours:
    """Hour windows are real hours, labelled with their offset; days stay local days."""

    @pytest.mark.parametrize(("zone", "day", "length", "count", "odd"), CHANGES)
    def test_the_hours_of_a_day_tile_it(
        self, zone: str, day: date, length: float, count: int, odd: list[tuple[int, str, str]]
    ) -> None:
        tz = ZoneInfo(zone)
        hours = hours_of_day(day, tz)
        assert len(hours) == count
        assert sum(h.hours for h in hours) == length == hours_between(day, day + timedelta(1), tz)
        # From local midnight to local midnight, end to start, each key once.
        # (In UTC: Python never finds a time equal to one its zone shows twice, like
        # Havana's midnight on 2026-11-01.)
        midnight = datetime.combine(day, datetime.min.time(), tz).astimezone(UTC)
        after = datetime.combine(day + timedelta(1), datetime.min.time(), tz).astimezone(UTC)
        assert (hours[0].start, hours[-1].end) == (midnight, after)
        assert all(a.end == b.start for a, b in itertools.pairwise(hours))
        assert len({h.key for h in hours}) == count
        # Each starts on the clock's hour, in its own offset, except where a change cuts it.
        unusual = [
            (h.key, h.start.isoformat(), h.end.isoformat())
            for h in hours
            if h.key >= 24 or h.hours != 1 or h.start.minute
        ]
        assert unusual == odd

    @pytest.mark.parametrize(("zone", "day"), [(z, d) for z, d, *_ in CHANGES])
    def test_every_instant_falls_in_the_hour_its_key_names(self, zone: str, day: date) -> None:
        tz = ZoneInfo(zone)
        hours = hours_of_day(day, tz)
        at = hours[0].start.astimezone(UTC)
        while at < hours[-1].end:
            local = at.astimezone(tz)
            hour = hour_at(at, tz)
            assert (hour.day, hour.key) == (local.date(), hour_key(local))
            assert hour.start <= at < hour.end
            # A window never spans a change: its label's offset is that of all it holds.
            assert hour.start.utcoffset() == local.utcoffset()
            at += timedelta(minutes=5)

    def test_the_autumn_hour_madrid_lives_twice_is_two_windows(self) -> None:
        # The case: 02:30+02:00 is 00:30 UTC, 02:30+01:00 is 01:30 UTC.
        tz = ZoneInfo("Europe/Madrid")
        first = hour_at(datetime.fromisoformat("2026-10-25T02:30:00+02:00"), tz)
        second = hour_at(datetime.fromisoformat("2026-10-25T02:30:00+01:00"), tz)
        assert (first.key, first.start.isoformat(), first.end.isoformat()) == (
            2, "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"
        )  # fmt: skip
        assert (second.key, second.start.isoformat(), second.end.isoformat()) == (
            26, "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"
        )  # fmt: skip
        # Labels compare as the instants they are, not as wall clocks.
        assert first.start != second.start and first.start < second.start
