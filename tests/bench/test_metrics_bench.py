"""The benchmarks' history: flows written with SQL must be those ingest derives from the
stored events, or the query figures would be of a city the platform cannot produce."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from bench.metrics_bench import seed
from fabcity.core import calendar
from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.ingest.rebuild import rebuild

FLOWS = """SELECT event_pk, action, resource, amount, ring, fate, recycled, state, day, hour,
                  site_id FROM flows ORDER BY event_pk, action, resource"""


def test_a_mixed_history_is_what_ingest_derives_from_its_events(pg_url: str) -> None:
    seed(pg_url, 2000, cities=10, mix=True)
    engine = make_engine(pg_url)
    with engine.connect() as c:
        written = c.execute(text(FLOWS)).all()
        kinds = c.execute(
            text("""SELECT action, resource, fate, count(*), sum(amount) FROM flows
                    WHERE city_id = 1 AND action NOT IN ('produce')
                      AND resource <> 'filament' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""")
        ).all()
    # By hand: city 1 has the reports g = 10, 20, ..., 2000; its third flow's kind is
    # (g // 200) % 4: waste for g < 200 (19), 800-990 (20), 1600-1790 (20), landfilled where
    # (g // 800) is odd (800-990); recovered 200-390, 1000-1190, 1800-1990 (60); machine hours
    # 400-590, 1200-1390 and 2000 (41); electricity 600-790, 1400-1590 (40).
    assert [tuple(k) for k in kinds] == [
        ("consume", "electricity", "", 40, 40 * 200_000),
        ("discard", "plastic", "landfill", 20, 20 * 50_000),
        ("discard", "plastic", "recycle", 39, 39 * 50_000),
        ("recover", "plastic", "", 60, 60 * 20_000),
        ("use", "machine_hours", "", 41, 41 * 500_000),
    ]
    report = rebuild(make_sessionmaker(engine), from_events=True)
    assert (report.events, report.flows, report.skipped) == (2000, 6000, 0)
    with engine.connect() as c:
        assert c.execute(text(FLOWS)).all() == written
    engine.dispose()


def test_the_seeded_events_are_keyed_by_their_local_hour_as_ingest_keys_them(
    pg_url: str,
) -> None:
    """Every 26 minutes for a year: both passes of the hour October's clocks repeat hold
    events, and the second is a window of its own (`calendar.hour_key`), as for ingest; a
    zone move or a rebuild of the history then finds each event where ingest put it."""
    seed(pg_url, 20_000, cities=1)
    engine = make_engine(pg_url)
    with engine.connect() as c:
        stored = c.execute(text("SELECT time, day, hour FROM events")).all()
    engine.dispose()
    zone = ZoneInfo("Europe/Madrid")
    keyed = [
        (t.astimezone(zone).date(), calendar.hour_key(t.astimezone(zone))) for t, _, _ in stored
    ]
    assert [(day, hour) for _, day, hour in stored] == keyed
    # By hand: on the last Sunday of October 02:00-03:00 in Madrid comes twice, 00:00-01:00
    # UTC (summer time) and 01:00-02:00 UTC (winter time), the second pass keyed 2 + 24.
    repeated = {hour for _, day, hour in stored if day == last_october_change() and hour % 24 == 2}
    assert repeated == {2, 26}


def last_october_change() -> date:
    """The last Sunday of October in the year before today (the seed's history)."""
    today = datetime.now(UTC).date()
    for year in (today.year, today.year - 1):
        last = date(year, 10, 31)
        sunday = last - timedelta(days=(last.weekday() + 1) % 7)
        if today - timedelta(days=360) <= sunday < today:
            return sunday
    raise AssertionError("no October in the year before today")
