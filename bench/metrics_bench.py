"""Metrics engine benchmark: rebuild throughput, and absorbing new events into a big city.

    .venv/bin/python -m bench.metrics_bench --sizes 1000000,10000000

For each history size N (events, two flows each, spread over a year, 20 sites), on a fresh
PostgreSQL database:
- rebuild: every rollup recomputed from the stored flows (`fabcity metrics rebuild`), in
  events per second;
- rebuild from events: flows derived again from the stored events too (`--from-events`), on
  a sample, in events per second;
- absorb: 1,000 new events (today) through the ingest path, then the recompute of the windows
  they dirtied, in seconds; and 1,000 late events spread over the last 30 days.
The history is written with SQL (`generate_series`), not through the API: it is the setting,
not the thing measured. Writes docs/metrics-benchmark.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from fabcity.core import calendar
from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.ingest.rebuild import rebuild
from fabcity.ingest.service import ingest
from fabcity.migrations import upgrade
from fabcity.registry import entries
from fabcity.rollups.recompute import recompute_dirty
from schemas import api

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parents[1]
SITES = 20
DAYS = 365


def fresh_database() -> tuple[str, Any]:
    name = f"bench_metrics_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    return ADMIN.rsplit("/", 1)[0] + "/" + name, admin


def drop(url: str, admin: Any) -> None:
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))


def city_slug(k: int) -> str:
    """The seeded cities: `big`, then `big-2`, `big-3`, …"""
    return "big" if k == 1 else f"big-{k}"


def seed(url: str, events: int, cities: int = 1, mix: bool = False) -> float:
    """A year of history: `events` site reports of a consume and a produce flow each, dealt
    out in turn to `cities` cities (ids 1…cities) of SITES sites each. With `mix`, each
    report carries a third flow (`MIX`): waste (recycled or landfilled), recovered material,
    machine hours or electricity, in turn, so that every metric has something to compute."""
    upgrade.upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    with transaction(factory) as s:
        for k in range(1, cities + 1):
            city = entries.create_city(
                s,
                api.CityIn(
                    slug=city_slug(k),
                    name=f"Big {k}",
                    country="ES",
                    timezone="Europe/Madrid",
                    population=1_000_000,
                ),
            )
            for i in range(SITES):
                entries.create_site(s, city, api.SiteIn(slug=f"site-{i}", name=f"Site {i}"))
    started = time.perf_counter()
    with engine.begin() as c:
        # Events spread evenly over the year before today; the payload is a real event, so a
        # rebuild from events derives the same two flows.
        c.execute(
            text(
                """
            INSERT INTO events (source, event_id, type, time, received_at, city_id, site_id,
                                device_id, day, hour, payload)
            SELECT src, 'h' || g, 'fabcity.flow', t, t, k,
                   (k - 1) * :sites + 1 + (g / :cities) % :sites, NULL,
                   (t AT TIME ZONE 'Europe/Madrid')::date,
                   extract(hour FROM t AT TIME ZONE 'Europe/Madrid')::int
                   -- the second pass of the hour October's clocks repeat: its own key, as
                   -- ingest keys it (calendar.hour_key)
                   + :second_pass * (extract(hour FROM t AT TIME ZONE 'Europe/Madrid')
                           = extract(hour FROM (t - interval '1 hour')
                                     AT TIME ZONE 'Europe/Madrid'))::int,
                   json_build_object('specversion', '1.0', 'id', 'h' || g,
                     'source', src, 'type', 'fabcity.flow',
                     'time', to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                     'data', json_build_array(
                        json_build_object('action', 'consume', 'resource', 'filament',
                          'quantity', 0.25, 'unit', 'kg',
                          'ring', (ARRAY['site','city','region','beyond'])[1 + g % 4]),
                        json_build_object('action', 'produce', 'resource', 'part',
                          'quantity', 1, 'unit', 'count', 'ring', 'city'){third}))
            FROM (SELECT g, k, now() - make_interval(secs => (g::float / :n) * :days * 86400) AS t,
                         '/' || CASE WHEN k = 1 THEN 'big' ELSE 'big-' || k END
                             || '/site-' || ((g / :cities) % :sites) AS src
                  FROM (SELECT g, 1 + g % :cities AS k FROM generate_series(1, :n) g) gk) x
        """.replace("{third}", _mix_json() if mix else "")
            ),
            {
                "n": events,
                "sites": SITES,
                "days": DAYS,
                "cities": cities,
                "second_pass": calendar.SECOND_PASS,
            },
        )
        c.execute(
            text(
                """
            INSERT INTO flows (event_pk, city_id, site_id, device_id, day, hour, action,
                               resource, amount, ring, fate, recycled, material, design_url,
                               job, state)
            SELECT id, city_id, site_id, 0, day, hour, 'consume', 'filament', 250000,
                   payload->'data'->0->>'ring', '', false, NULL, NULL, NULL, 'reported'
            FROM events
            UNION ALL
            SELECT id, city_id, site_id, 0, day, hour, 'produce', 'part', 1000000, 'city', '',
                   false, NULL, NULL, NULL, 'reported'
            FROM events
        """
                + (_mix_flows() if mix else "")
            )
        )
    raw = create_engine(url, isolation_level="AUTOCOMMIT")
    with raw.connect() as c:
        c.execute(text("VACUUM ANALYZE"))
    raw.dispose()
    engine.dispose()
    return time.perf_counter() - started


# The third flow of a mixed history's report (`seed(mix=True)`), by the report's number g:
# its kind changes from one report of a site to its next ((g / cities / sites) % 4), and waste
# is recycled and landfilled in turn. (action, resource, quantity, unit, ring, fate), and the
# amount in millionths of the canonical unit (kg, h, kWh) as ingest derives it.
MIX = (
    ("discard", "plastic", "0.05", "kg", "city", "recycle", 50_000),
    ("discard", "plastic", "0.05", "kg", "city", "landfill", 50_000),
    ("recover", "plastic", "0.02", "kg", "city", None, 20_000),
    ("use", "machine_hours", "0.5", "h", "site", None, 500_000),
    ("consume", "electricity", "0.2", "kWh", "city", None, 200_000),
)
# Which of MIX: the kind (4), and for waste which fate (2).
_MIX_CASE = """CASE (g / :cities / :sites) % 4
    WHEN 0 THEN 1 + (g / :cities / :sites / 4) % 2 ELSE 2 + (g / :cities / :sites) % 4 END"""


def _mix_json() -> str:
    parts = []
    for i, (action, resource, quantity, unit, ring, fate, _) in enumerate(MIX, start=1):
        fields = (
            f"'action', '{action}', 'resource', '{resource}', 'quantity', {quantity}, "
            f"'unit', '{unit}', 'ring', '{ring}'" + (f", 'fate', '{fate}'" if fate else "")
        )
        parts.append(f"WHEN {i} THEN json_build_object({fields})")
    return ", CASE " + _MIX_CASE + " " + " ".join(parts) + " END"


def _mix_flows() -> str:
    """The third flows, read back from the stored payloads (the one place they are chosen)."""
    amounts = " ".join(
        f"WHEN f->>'action' = '{action}' AND f->>'resource' = '{resource}' THEN {amount}"
        for action, resource, *_, amount in MIX
    )
    return f"""
            UNION ALL
            SELECT id, city_id, site_id, 0, day, hour, f->>'action', f->>'resource',
                   CASE {amounts} END, f->>'ring', coalesce(f->>'fate', ''), false, NULL,
                   NULL, NULL, 'reported'
            FROM (SELECT *, payload->'data'->2 AS f FROM events) e
    """


def new_events(count: int, spread_days: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": f"/big/site-{i % SITES}",
            "type": "fabcity.flow",
            "time": (now - timedelta(days=(i % spread_days), minutes=i % 50)).isoformat(),
            "data": [
                {
                    "action": "consume",
                    "resource": "filament",
                    "quantity": 120,
                    "unit": "g",
                    "ring": "city",
                },
                {
                    "action": "produce",
                    "resource": "part",
                    "quantity": 1,
                    "unit": "count",
                    "ring": "city",
                },
            ],
        }
        for i in range(count)
    ]


def absorb(url: str, spread_days: int, repeats: int = 3) -> tuple[float, float, int]:
    """Median seconds to ingest 1,000 events and to recompute their windows."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    ingest_s, recompute_s, windows = [], [], 0
    for _ in range(repeats):
        batch = new_events(1000, spread_days)
        started = time.perf_counter()
        with transaction(factory) as s:
            outcome = ingest(s, batch)
        assert outcome.result.accepted == 1000
        middle = time.perf_counter()
        with transaction(factory) as s:
            windows = len(recompute_dirty(s, 10_000).touched)
        ingest_s.append(middle - started)
        recompute_s.append(time.perf_counter() - middle)
    engine.dispose()
    return statistics.median(ingest_s), statistics.median(recompute_s), windows


def measure(size: int, sample: int) -> dict[str, float]:
    url, admin = fresh_database()
    try:
        seeded = seed(url, size)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        started = time.perf_counter()
        report = rebuild(factory)
        rebuild_s = time.perf_counter() - started
        today = absorb(url, 1)
        late = absorb(url, 30)
        # Rebuild from events on a sample city-day range: re-derivation is Python work that
        # grows linearly; a sample keeps the run short.
        with engine.begin() as c:
            c.execute(text("DELETE FROM flows WHERE event_pk > :k"), {"k": sample})
            c.execute(text("DELETE FROM events WHERE id > :k"), {"k": sample})
        started = time.perf_counter()
        rebuilt = rebuild(factory, from_events=True)
        reflow_s = time.perf_counter() - started
        engine.dispose()
        return {
            "size": size,
            "seed_s": seeded,
            "windows": report.windows,
            "rebuild_s": rebuild_s,
            "rebuild_eps": size / rebuild_s,
            "reflow_events": rebuilt.events,
            "reflow_s": reflow_s,
            "reflow_eps": rebuilt.events / reflow_s,
            "absorb_ingest_s": today[0],
            "absorb_recompute_s": today[1],
            "absorb_windows": today[2],
            "late_ingest_s": late[0],
            "late_recompute_s": late[1],
            "late_windows": late[2],
        }
    finally:
        drop(url, admin)
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--sample", type=int, default=200_000)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, min(args.sample, size))
        rows.append(r)
        print(
            f"N={size:>11,}  rebuild {r['rebuild_eps']:>10,.0f} events/s ({r['rebuild_s']:.1f} s)"
            f"  from events {r['reflow_eps']:>8,.0f} events/s"
            f"  absorb 1,000 today: {r['absorb_ingest_s']:.3f} s ingest + "
            f"{r['absorb_recompute_s']:.3f} s recompute"
            f"  late over 30 days: {r['late_ingest_s']:.3f} + {r['late_recompute_s']:.3f} s",
            flush=True,
        )
    write(rows, args)


def write(rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    lines = [
        "# Metrics engine benchmark",
        "",
        "Command: `.venv/bin/python -m bench.metrics_bench "
        f"--sizes {args.sizes} --sample {args.sample}`",
        "",
        f"Run on {datetime.now(UTC):%Y-%m-%d} on this 2-core machine, PostgreSQL 15 on the same "
        "cores. History: N events of two flows each over a year, 20 sites, one city. Absorb "
        "figures are medians of 3 runs.",
        "",
        "| history (events) | rebuild from flows | rebuild from events | 1,000 new events: "
        "ingest + recompute | 1,000 late events over 30 days: ingest + recompute |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']:,.0f} | {r['rebuild_eps']:,.0f} events/s ({r['rebuild_s']:.1f} s,"
            f" {r['windows']:.0f} windows) | {r['reflow_eps']:,.0f} events/s"
            f" ({r['reflow_events']:,.0f} events) | {r['absorb_ingest_s']:.3f} + "
            f"{r['absorb_recompute_s']:.3f} s ({r['absorb_windows']:.0f} window) | "
            f"{r['late_ingest_s']:.3f} + {r['late_recompute_s']:.3f} s "
            f"({r['late_windows']:.0f} windows) |"
        )
    out = ROOT / "docs" / "metrics-benchmark.md"
    out.parent.mkdir(exist_ok=True)
    existing = out.read_text() if out.exists() else ""
    notes = existing.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in existing else "\n"
    out.write_text("\n".join(lines) + "\n\n<!-- notes -->" + notes)


if __name__ == "__main__":
    main()
