"""The series as JSON (sums added up in SQL, points written as bytes) is the straightforward
computation to the byte: every metric from its cells, a pydantic model, its JSON."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import MICRO
from fabcity.ingest.service import ingest
from fabcity.read import metrics, queries, series
from fabcity.registry import designs, entries, okh
from schemas import api, reports
from services.http.metrics import json_of
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow, register
from workers.jobs import recompute_dirty_windows

# Days around the spring clock change in Madrid (29 March 2026: a day of 23 hours).
FIRST, LAST = date(2026, 3, 2), date(2026, 4, 12)
NOW = datetime(2026, 4, 8, 12, tzinfo=UTC)  # later windows are partial, or in the future
ALL = list(metrics.METRICS)
FAR = "farville"
# A registered design of known mass: things made of it have their mass modelled.
BRACKET = "https://example.org/bracket/okh.yml"
MANIFEST = Path(__file__).parents[2] / "fixtures" / "okh" / "bracket.yml"


def flows(rng: random.Random) -> list[dict[str, Any]]:
    """A few flows of every kind a metric reads: rings, fates, recycled, states, devices."""
    ring = lambda: rng.choice(["site", "city", "region", "beyond"])  # noqa: E731
    fate = rng.choice(["reuse", "recycle", "compost", "energy", "incineration", "landfill"])
    every = [
        flow(quantity=rng.randint(0, 40) / 4, ring=ring(), recycled=rng.random() < 0.3),
        flow("consume", rng.choice(["wood", "metal", "recycled_plastic"]), rng.randint(1, 9),
             ring=ring()),
        flow("produce", "part", rng.randint(0, 5), "count", ring=ring()),
        flow("produce", "part", rng.randint(1, 3), "count", ring=ring(), design=BRACKET),
        flow("produce", "plastic", rng.randint(1, 9) / 8, "kg", ring=ring()),
        flow("modify", "furniture", 1, "count", ring=ring()),
        flow("discard", "plastic", rng.randint(1, 9) / 2, "kg", fate=fate, ring=ring()),
        flow("recover", "recycled_plastic", 0.5, "kg"),
        flow("consume", "electricity", rng.randint(1, 30), "kWh", ring=ring()),
        flow("use", "machine_hours", rng.randint(1, 4), "h"),
        flow("work", rng.choice(["work_hours", "training_hours"]), 2, "h"),
    ]  # fmt: skip
    return rng.sample(every, rng.randint(1, 4))


@pytest.fixture
def history(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Six weeks of a city of two sites and a device, posted at random hours (some on the day
    the clocks go forward), some estimated, then rolled up."""
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    register(factory)
    with transaction(factory) as s:
        designs.import_manifest(s, okh.load(MANIFEST.read_bytes(), "yaml"), BRACKET)
    with transaction(factory) as s:  # a city to compare with, on the other side of the world
        far = entries.create_city(
            s, api.CityIn(slug=FAR, name="Far", country="NZ", timezone="Pacific/Auckland")
        )
        entries.create_site(s, far, api.SiteIn(slug=SITE, name="Lab"))
    rng = random.Random(20)
    sources = [f"/{CITY}/{SITE}", f"/{CITY}/{OTHER_SITE}", f"/{CITY}/{SITE}/{DEVICE}",
               f"/{FAR}/{SITE}"]  # fmt: skip
    items = []
    for _ in range(160):
        day = FIRST + timedelta(days=rng.randint(0, (LAST - FIRST).days - 5))
        at = datetime(day.year, day.month, day.day, rng.randint(0, 23), tzinfo=UTC)
        items.append(event(flows(rng), source=rng.choice(sources), time=at.isoformat()))
    for day in (date(2026, 3, 29), date(2026, 3, 28)):  # the short day, hour by hour
        for hour in range(0, 23, 2):
            at = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
            items.append(event(flows(rng), source=rng.choice(sources), time=at.isoformat()))
    with transaction(factory) as s:
        assert not ingest(s, items, received_at=NOW).result.rejected
    assert recompute_dirty_windows(factory, 1000)
    yield factory
    engine.dispose()


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
