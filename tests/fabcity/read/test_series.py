"""The series as JSON (sums added up in SQL, points written as bytes) is the straightforward
computation to the byte: every metric from its cells, a pydantic model, its JSON."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import MICRO
from fabcity.read import metrics, queries, series
from schemas import reports
from services.http.metrics import json_of
from tests.support.city import CITY, OTHER_SITE, SITE
from tests.support.history import ALL, FAR, FIRST, LAST, NOW


def both(s: Session, names: list[str], interval: Any, group_by: Any, **kw: Any) -> int:
    """Compares the two; returns how many values were recorded."""
    first, last = kw.pop("first", FIRST), kw.pop("last", LAST)
    straight = queries.metric_series(s, CITY, names, first, last, interval, group_by, NOW, **kw)
    fast = series.series_json(s, CITY, names, first, last, interval, group_by, NOW, **kw)
    slow = json_of(straight)
    if fast != slow:
        i = next(k for k in range(len(fast)) if fast[k] != slow[k])
        print(slow[i - 400 : i + 60])
        print(fast[i - 400 : i + 60])
    assert fast == slow
    return sum(p.value is not None for one in straight.series for p in one.points)


def test_the_history_holds_masses_modelled_from_a_design(history: sessionmaker[Session]) -> None:
    # What the comparisons below need to see: sums of design masses, made and exported.
    with transaction(history) as s:
        fast = orjson.loads(
            series.series_json(s, CITY, ["produced_kg", "exp"], FIRST, LAST, "day", None, NOW)
        )
    for one in fast["series"]:
        modelled = [p for p in one["points"] if p["state"] == "modelled" and p["value"]]
        assert modelled, one["name"]


@pytest.mark.parametrize("interval", ["hour", "day", "week", "month", "year"])
@pytest.mark.parametrize("group_by", [None, "site", "device", "resource", "ring", "mfa_category"])
def test_every_metric_as_the_cells_give_it(
    history: sessionmaker[Session], interval: str, group_by: str | None
) -> None:
    # hours: the week of the clock change; else the whole history and days on either side
    span = {"first": date(2026, 3, 26), "last": date(2026, 4, 1)} if interval == "hour" else {}
    with transaction(history) as s:
        recorded = both(s, ALL, interval, group_by, **span)
        both(s, list(metrics.DEFAULT_NAMES), interval, group_by, **span)
    assert recorded > len(ALL) // 2  # a history, not nulls compared with nulls


@pytest.mark.parametrize(("interval", "group_by"), [("day", None), ("week", "device")])
def test_one_site_and_a_quiet_period(
    history: sessionmaker[Session], interval: str, group_by: str | None
) -> None:
    with transaction(history) as s:
        assert both(s, ALL, interval, group_by, site=SITE)
        assert both(s, ALL, interval, group_by, site=OTHER_SITE)
        # nothing posted: no series by a group, and values null for want of events
        both(s, ALL, interval, group_by, first=date(2026, 6, 1), last=date(2026, 6, 20))


@pytest.mark.parametrize(
    ("interval", "first", "last"),
    [("week", FIRST, LAST), ("day", FIRST, LAST), ("hour", date(2026, 3, 28), date(2026, 3, 30))],
)
def test_compare_is_the_comparison_model(
    history: sessionmaker[Session], interval: Any, first: date, last: date
) -> None:
    names = ["input_kg", "diversion_rate", "local_input_share", "fci"]
    with transaction(history) as s:
        fast = series.compare_json(s, [FAR, CITY], names, first, last, interval)
        each = [
            queries.metric_series(s, c, names, first, last, interval, None) for c in (FAR, CITY)
        ]
    body = reports.Comparison(names=names, interval=interval, from_=first, to=last, cities=each)
    assert fast == json_of(body)
    assert orjson.loads(fast)["cities"][0]["timezone"] == "Pacific/Auckland"


def test_a_sum_of_millionths_needs_no_rounding() -> None:
    """`_additive_points` writes whole sums unrounded: n / MICRO is already the float that
    the model's round(…, 9) gives, for every n up to 2**53 (spot checks at every magnitude,
    and every n up to two million)."""
    rng = random.Random(7)
    checked = [*range(2_000_000), 2**53 - 1, 2**53 - 7, 10**15 + 1]
    checked += [rng.randrange(10**e) for e in range(1, 16) for _ in range(20_000)]
    assert [n for n in checked if round(n / MICRO, 9) != n / MICRO] == []


@pytest.mark.parametrize("interval", ["hour", "day"])
def test_a_breakdown_by_site_read_as_postgresql_sends_it(
    history: sessionmaker[Session], interval: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a series by site is read in chunks while the server adds up the next
    groups (`series._stream`): the same bytes in chunks of one row, of a few, or read whole;
    other breakdowns are read whole."""
    span = {"first": date(2026, 3, 26), "last": date(2026, 4, 1)} if interval == "hour" else {}
    streamed: list[tuple[str, int]] = []
    real = psycopg.Cursor.stream

    def spy(cursor: Any, query: Any, params: Any = None, **kw: Any) -> Iterator[Any]:
        streamed.append((str(query), kw["size"]))
        return real(cursor, query, params, **kw)

    monkeypatch.setattr(psycopg.Cursor, "stream", spy)
    with transaction(history) as s:
        postgres = s.get_bind().dialect.name == "postgresql"
        for size in (1, 3, series.CHUNK):
            monkeypatch.setattr(series, "CHUNK", size)
            both(s, ALL, interval, "site", **span)
        monkeypatch.setattr(series, "CHUNKED", False)
        both(s, ALL, interval, "site", **span)
        both(s, ALL, interval, "device", **span)
        monkeypatch.setattr(series, "CHUNKED", True)
        both(s, ALL, interval, None, **span)
    # three reads in chunks, then none (libpq before 17, other breakdowns); none on SQLite
    assert [size for _, size in streamed] == ([1, 3, series.CHUNK] if postgres else [])
    assert all("ORDER BY" in sql for sql, _ in streamed)


@pytest.mark.timeout(60)
def test_a_read_cut_short_leaves_the_connection_usable(
    history: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while the rows of a series by site are read (here: placing the second
    row) reaches the caller, and the rollback that follows does not wait for the rest of a
    stream left open (it waited forever); the next read is served."""
    placed = 0

    class Failing(dict[Any, int]):
        def get(self, key: Any, default: Any = None) -> Any:
            nonlocal placed
            placed += 1
            if placed == 2:
                raise RuntimeError("cut short")
            return super().get(key, default)

    slots = series._slots
    monkeypatch.setattr(series, "_slots", lambda f, interval: Failing(slots(f, interval)))
    monkeypatch.setattr(series, "CHUNK", 1)  # the server has more to send when it fails
    with pytest.raises(RuntimeError, match="cut short"), transaction(history) as s:
        series.series_json(s, CITY, ALL, FIRST, LAST, "day", "site", NOW)
    monkeypatch.setattr(series, "_slots", slots)
    with transaction(history) as s:
        assert both(s, ALL, "day", "site")


@pytest.mark.parametrize("interval", ["hour", "day", "week", "month", "year"])
@pytest.mark.parametrize("group_by", [None, "resource", "ring", "mfa_category"])
def test_a_city_s_own_cells_give_every_metric_its_sites_cells_give(
    history: sessionmaker[Session], interval: Any, group_by: Any
) -> None:
    """Metrics computed from cells, with no site or device to tell apart, read the city's own
    cubes (`queries.cell_groups` given the metrics): each value is the one the sites' cells
    give, to the last digit, and there are fewer cells to read. A metric that counts machines
    keeps the sites' cells."""
    span = (date(2026, 3, 26), date(2026, 4, 1)) if interval == "hour" else (FIRST, LAST)
    names = [n for n in ALL if n not in metrics.BY_MACHINE]
    with transaction(history) as s:
        f = queries.frame(s, CITY, *span, interval, NOW)
        sites = queries.cell_groups(s, f, interval, group_by)
        city = queries.cell_groups(s, f, interval, group_by, names)
        kept = queries.cell_groups(s, f, interval, group_by, ["utilization", *names])
    assert city.keys() == sites.keys() and kept == sites
    compared = 0
    for key, by_start in sites.items():
        for start, ctx in zip(f.starts, f.facts, strict=True):
            for name in names:
                mine = queries.compute(name, city[key].get(start, []), ctx)
                assert mine == queries.compute(name, by_start.get(start, []), ctx), (name, start)
                compared += mine.value is not None
    assert compared > len(names) // 2  # values, not nulls compared with nulls
    count = lambda groups: sum(len(c) for by in groups.values() for c in by.values())  # noqa: E731
    assert count(city) < count(sites)
    assert {c.site for by in city.values() for cs in by.values() for c in cs} == {""}
