"""Events and flows partitioned by month, against the tables as they are, on one history.

    .venv/bin/python -m bench.partitions --events 10000000

On a fresh database, bench.metrics_bench's `seed` writes a year of history (N events of two
flows each, 20 sites, one city, with SQL). Then copies of both tables are made, partitioned by
month: `events_part` by `time` (`PARTITION BY RANGE (time)`), `flows_part` by `day` (flows carry
no time; `day` is the local date the recompute reads by), with the same indexes, except that a
partitioned table's unique keys must include its partition key: `(id, time)` and
`(source, event_id, time)`. So a third variant keeps the CloudEvents key apart, in an ordinary
table `event_keys (source, event_id)` written in the same transaction.

Measured, each on the plain tables and on the partitioned copies (medians; the CPU of the
PostgreSQL backend, read from /proc, beside the wall time, since the machine is shared):
- COPY of new events at the current time, 1,000 rows per transaction (`--copy-rows`, in
  `--rounds` rounds, the variants in turn);
- the ingest path's lookup of events by (source, event_id) (a correction finding its original;
  `fabcity/ingest/corrections.py`);
- the recompute's reads (`fabcity/rollups/recompute.py`): one window's events per site (its
  `SiteActivity` rebuild), the events and flows a pending mark names (id ranges), one window's
  flows by the cube's dimensions, and a month's events per site (a month rebuilt); on the
  partitioned copy without and with a bound on `time` that lets the planner skip partitions;
- an old month removed: `DELETE` (and the `VACUUM` that makes its space reusable) against
  `DETACH PARTITION` and `DROP TABLE`.

The production schema is not changed: the copies live in the benchmark's database only.
Prints a Markdown report; `--out` writes it to a file too.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench import mqtt_tools
from bench.metrics_bench import SITES, drop, fresh_database, seed

# The history's one city (seed's `big`), its first id.
CITY_ID = 1
HOURS = (10, 11, 12)  # a recompute claims a few hours of one day at a time


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def months(first: date, last: date) -> list[date]:
    """First days of the months from `first`'s to the one after `last`'s."""
    out, m = [], first.replace(day=1)
    while m <= last:
        out.append(m)
        m = (m + timedelta(days=32)).replace(day=1)
    out.append(m)
    return out


def partition(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """The partitioned copies and the key table, built from the plain tables; seconds each."""
    row = conn.execute(
        "SELECT min(time)::date, max(time)::date, min(day), max(day) FROM events"
    ).fetchone()
    assert row is not None
    lo, hi, dlo, dhi = row
    # Room for the COPYs at the current time, and a month ahead, as a schedule would make.
    bounds = months(min(lo, dlo), max(hi, dhi, date.today()) + timedelta(days=31))
    took = {}
    started = time.perf_counter()
    conn.execute(
        "CREATE TABLE events_part (LIKE events INCLUDING DEFAULTS) PARTITION BY RANGE (time)"
    )
    conn.execute("CREATE TABLE flows_part (LIKE flows INCLUDING DEFAULTS) PARTITION BY RANGE (day)")
    for a, b in itertools.pairwise(bounds):
        name = f"{a:%Y_%m}"
        conn.execute(
            f"CREATE TABLE events_{name} PARTITION OF events_part "
            f"FOR VALUES FROM ('{a} 00:00+00') TO ('{b} 00:00+00')"
        )
        conn.execute(
            f"CREATE TABLE flows_{name} PARTITION OF flows_part FOR VALUES FROM ('{a}') TO ('{b}')"
        )
    # Loaded first, indexed after: as a migration copying a live table would.
    conn.execute("INSERT INTO events_part SELECT * FROM events")
    conn.execute("ALTER TABLE events_part ADD PRIMARY KEY (id, time)")
    conn.execute("ALTER TABLE events_part ADD UNIQUE (source, event_id, time)")
    conn.execute("CREATE INDEX ON events_part (city_id, day, hour, site_id)")
    conn.execute(
        "CREATE INDEX ON events_part (device_id, time) WHERE type = 'fabcity.meter.reading'"
    )
    took["events_part"] = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("INSERT INTO flows_part SELECT * FROM flows")
    conn.execute("ALTER TABLE flows_part ADD PRIMARY KEY (id, day)")
    conn.execute("CREATE INDEX ON flows_part (city_id, day, hour)")
    conn.execute("CREATE INDEX ON flows_part (design_url) WHERE design_url IS NOT NULL")
    took["flows_part"] = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute(
        "CREATE TABLE event_keys (source varchar(512), event_id varchar(256), "
        "PRIMARY KEY (source, event_id))"
    )
    conn.execute("INSERT INTO event_keys SELECT source, event_id FROM events")
    took["event_keys"] = time.perf_counter() - started
    conn.execute("VACUUM ANALYZE events_part, flows_part, event_keys")
    took["partitions"] = len(bounds) - 1
    return took


class Backend:
    """CPU seconds of the PostgreSQL backend serving a connection (from /proc)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        self.proc = psutil.Process(pid[0] if pid else 0)

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)


def timed(
    conn: psycopg.Connection[Any], work: Callable[[], object], repeat: int
) -> tuple[float, float]:
    """Median wall time of `work` and the backend's mean CPU per run, in ms, after one
    warm-up run. The CPU is a mean: /proc counts it in ticks of 10 ms, longer than most runs."""
    backend = Backend(conn)
    work()
    walls = []
    c0 = backend.cpu()
    for _ in range(repeat):
        t0 = time.perf_counter()
        work()
        walls.append((time.perf_counter() - t0) * 1000)
    return statistics.median(walls), (backend.cpu() - c0) * 1000 / repeat


# COPY ---------------------------------------------------------------------------------------

COLUMNS = ("source", "event_id", "type", "time", "received_at", "city_id", "site_id", "day",
           "hour", "payload")  # fmt: skip


def copy_rows(
    conn: psycopg.Connection[Any], table: str, n: int, tag: str, keys: bool
) -> tuple[float, float]:
    """COPY n new events at the current time into `table`, 1,000 per transaction (and, with
    `keys`, their keys into `event_keys` in the same transaction): (rows/s, backend µs/row)."""
    _, payload = mqtt_tools.event(0, "big", tag)
    body = payload.decode()
    backend = Backend(conn)
    now = datetime.now(UTC)
    cpu0, started = backend.cpu(), time.perf_counter()
    for start in range(0, n, 1000):
        rows = [
            (f"/big/site-{i % SITES}", f"{tag}-{i}", "fabcity.flow", now, now, CITY_ID,
             1 + i % SITES, now.date(), now.hour, body)
            for i in range(start, min(n, start + 1000))
        ]  # fmt: skip
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            if keys:
                with cur.copy("COPY event_keys (source, event_id) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row[:2])
    seconds = time.perf_counter() - started
    return n / seconds, (backend.cpu() - cpu0) / n * 1e6


COPY_VARIANTS = (
    ("events as is: unique (source, event_id)", "events", False),
    ("partitioned by month: unique (source, event_id, time)", "events_part", False),
    ("partitioned, plus event_keys (source, event_id)", "events_part", True),
)


def copies(conn: psycopg.Connection[Any], n: int, rounds: int) -> list[tuple[str, float, float]]:
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in COPY_VARIANTS}
    for r in range(rounds):
        for k, (name, table, keys) in enumerate(COPY_VARIANTS):
            runs[name].append(copy_rows(conn, table, n, f"c{r}v{k}", keys))
            print(f"round {r + 1}: {name}: {runs[name][-1][0]:,.0f} rows/s", flush=True)
    return [
        (name, statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
        for name, v in runs.items()
    ]


# Reads --------------------------------------------------------------------------------------


def reads(conn: psycopg.Connection[Any], repeat: int) -> list[tuple[str, str, float, float]]:
    """(read, table, median ms, median backend CPU ms) for each read on each variant."""
    # A day in the middle of the year of history, and its month.
    day = date.today() - timedelta(days=180)
    first = day.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    # The ids of 1,000 recent events and of their flows: what a pending mark names. The seed
    # numbers events from the newest back, and each event's consume flows in the same order
    # (its produce flows come after all of those: a mark names one range per table).
    low = conn.execute("SELECT min(id) FROM events").fetchone()
    event_lo = int(low[0]) + 1000 if low else 0
    event_hi = event_lo + 999
    ftop = conn.execute(
        "SELECT min(id), max(id) FROM flows WHERE event_pk BETWEEN %s AND %s "
        "AND action = 'consume'",
        (event_lo, event_hi),
    ).fetchone()
    flow_lo, flow_hi = ftop if ftop else (0, 0)
    keys = conn.execute(
        "SELECT source, event_id FROM events TABLESAMPLE SYSTEM (1) LIMIT 10"
    ).fetchall()
    hours = list(HOURS)
    # Any time zone's local day lies within a day either side of the UTC one.
    near = "AND time >= %(day)s::date - 1 AND time < %(day)s::date + 2"
    month = "AND time >= %(first)s::date - 1 AND time < %(last)s::date + 2"
    p = {"c": CITY_ID, "day": day, "first": first, "last": last, "hours": hours,
         "elo": event_lo, "ehi": event_hi, "flo": flow_lo, "fhi": flow_hi}  # fmt: skip
    key_list = ", ".join(["(%s, %s)"] * len(keys))
    key_args = [v for k in keys for v in k]
    site_hours = (
        "SELECT city_id, day, hour, site_id, count(*) FROM {t} "
        "WHERE city_id = %(c)s AND day = %(day)s AND hour = ANY(%(hours)s) {bound} "
        "GROUP BY city_id, day, hour, site_id"
    )
    marked_events = (
        "SELECT city_id, day, hour, site_id, count(*) FROM {t} "
        "WHERE city_id = %(c)s AND id BETWEEN %(elo)s AND %(ehi)s {bound} "
        "GROUP BY city_id, day, hour, site_id"
    )
    marked_flows = (
        "SELECT city_id, day, hour, site_id, action, resource, ring, sum(amount), count(*) "
        "FROM {t} WHERE city_id = %(c)s AND id BETWEEN %(flo)s AND %(fhi)s "
        "AND event_pk BETWEEN %(elo)s AND %(ehi)s GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )
    window_flows = (
        "SELECT city_id, day, hour, site_id, device_id, action, resource, ring, fate, recycled, "
        "state, sum(amount), count(*) FROM {t} "
        "WHERE city_id = %(c)s AND day = %(day)s AND hour = ANY(%(hours)s) "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
    )
    month_events = (
        "SELECT city_id, day, hour, site_id, count(*) FROM {t} "
        "WHERE city_id = %(c)s AND day BETWEEN %(first)s AND %(last)s {bound} "
        "GROUP BY city_id, day, hour, site_id"
    )
    plans: list[tuple[str, str, str, dict[str, Any] | list[Any], int]] = []
    lookup = "SELECT id FROM {t} WHERE (source, event_id) IN (" + key_list + ")"
    plans += [
        ("10 events by (source, event_id)", "events", lookup.format(t="events"), key_args, repeat),
        ("", "events_part", lookup.format(t="events_part"), key_args, repeat),
        ("", "event_keys", lookup.format(t="event_keys").replace("SELECT id", "SELECT 1"),
         key_args, repeat),
    ]  # fmt: skip
    for label, sql, bound, n in (
        (f"one window's events per site ({day}, 3 hours)", site_hours, near, repeat),
        ("a pending mark's 1,000 events (id range)", marked_events, "", repeat),
        (f"a month's events per site ({first:%Y-%m})", month_events, month, max(3, repeat // 10)),
    ):
        plans += [
            (label, "events", sql.format(t="events", bound=""), p, n),
            ("", "events_part", sql.format(t="events_part", bound=""), p, n),
        ]
        if bound:
            plans.append(("", "events_part + time bound", sql.format(t="events_part", bound=bound),
                          p, n))  # fmt: skip
    for label, sql in (
        ("a pending mark's flows (id ranges)", marked_flows),
        (f"one window's flows by the cube's dimensions ({day}, 3 hours)", window_flows),
    ):
        plans += [
            (label, "flows", sql.format(t="flows"), p, repeat),
            ("", "flows_part", sql.format(t="flows_part"), p, repeat),
        ]
    out = []
    for label, table, sql, args, n in plans:

        def run(sql: str = sql, args: Any = args) -> object:
            return conn.execute(sql, args).fetchall()

        wall, cpu = timed(conn, run, n)
        out.append((label, table, wall, cpu))
        print(f"{label or '  ':<60} {table:<26} {wall:8.2f} ms  backend {cpu:8.2f} ms", flush=True)
    return out


# An old month -------------------------------------------------------------------------------


def removal(conn: psycopg.Connection[Any]) -> list[tuple[str, float, float, str]]:
    """The oldest whole month removed from the plain tables (DELETE, then VACUUM) and from the
    partitioned ones (DETACH, DROP): (step, seconds, backend CPU seconds, rows)."""
    lo = conn.execute("SELECT min(day) FROM flows").fetchone()
    m0 = ((lo[0] if lo else date.today()).replace(day=1) + timedelta(days=32)).replace(day=1)
    m1 = (m0 + timedelta(days=32)).replace(day=1)
    name = f"{m0:%Y_%m}"
    backend = Backend(conn)
    out = []

    def step(label: str, sql: str, args: Sequence[Any] = ()) -> None:
        c0, t0 = backend.cpu(), time.perf_counter()
        cur = conn.execute(sql, args)
        rows = f"{cur.rowcount:,}" if cur.rowcount and cur.rowcount > 0 else ""
        out.append((label, time.perf_counter() - t0, backend.cpu() - c0, rows))
        print(f"{label:<60} {out[-1][1]:8.2f} s  backend {out[-1][2]:6.2f} s  {rows}", flush=True)

    bound = f"'{m0} 00:00+00' AND time < '{m1} 00:00+00'"
    step(f"DELETE FROM events, {m0:%Y-%m}", f"DELETE FROM events WHERE time >= {bound}")
    step(f"DELETE FROM flows, {m0:%Y-%m}", "DELETE FROM flows WHERE day >= %s AND day < %s",
         (m0, m1))  # fmt: skip
    step("VACUUM events, flows", "VACUUM events, flows")
    step(f"DETACH events_{name}", f"ALTER TABLE events_part DETACH PARTITION events_{name}")
    step(f"DETACH flows_{name}", f"ALTER TABLE flows_part DETACH PARTITION flows_{name}")
    step("DROP both detached tables", f"DROP TABLE events_{name}, flows_{name}")
    return out


# The run ------------------------------------------------------------------------------------


def sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    out = {}
    for table in ("events", "events_part", "event_keys", "flows", "flows_part"):
        # A plain table has no partition tree: then its own size.
        row = conn.execute(
            "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) "
            "FROM pg_partition_tree(%s::regclass)), pg_total_relation_size(%s::regclass))",
            (table, table),
        ).fetchone()
        out[table] = int(row[0]) if row else 0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000, help="history, events")
    parser.add_argument("--copy-rows", type=int, default=200_000, help="rows per COPY run")
    parser.add_argument("--rounds", type=int, default=3, help="COPY rounds, for medians")
    parser.add_argument("--repeat", type=int, default=50, help="runs of each read, for medians")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    url, admin = fresh_database()
    try:
        seeded = seed(url, args.events)
        print(f"seeded {args.events:,} events in {seeded:.0f} s", flush=True)
        with connect(url) as conn:
            built = partition(conn)
            print(f"partitioned copies built: {built}", flush=True)
            size = sizes(conn)
            # Reads first, while both copies hold the same rows.
            read = reads(conn, args.repeat)
            copied = copies(conn, args.copy_rows, args.rounds)
            removed = removal(conn)
    finally:
        drop(url, admin)
        admin.dispose()
    text = report(args, seeded, built, size, copied, read, removed)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def report(
    args: argparse.Namespace,
    seeded: float,
    built: dict[str, float],
    size: dict[str, int],
    copied: list[tuple[str, float, float]],
    read: list[tuple[str, str, float, float]],
    removed: list[tuple[str, float, float, str]],
) -> str:
    base = copied[0][1]
    gib = 2**30
    lines = [
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} "
        f"cores, PostgreSQL on the same cores: `python -m bench.partitions "
        f"{' '.join(sys.argv[1:]) or '(defaults)'}`",
        "",
        f"History: {args.events:,} events and {2 * args.events:,} flows over a year (seeded in "
        f"{seeded:.0f} s); {built['partitions']:.0f} monthly partitions per table. Copies built "
        f"in {built['events_part']:.0f} s (events), {built['flows_part']:.0f} s (flows), "
        f"{built['event_keys']:.0f} s (event_keys). Sizes with indexes: events "
        f"{size['events'] / gib:.2f} GiB, events_part {size['events_part'] / gib:.2f} GiB, "
        f"event_keys {size['event_keys'] / gib:.2f} GiB, flows {size['flows'] / gib:.2f} GiB, "
        f"flows_part {size['flows_part'] / gib:.2f} GiB.",
        "",
        f"COPY of {args.copy_rows:,} new events, 1,000 per transaction (median of "
        f"{args.rounds} rounds):",
        "",
        "| into | rows/s | ratio | backend CPU per row |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {rate:,.0f} | {rate / base:.2f} | {cpu:.1f} µs |"
            for name, rate, cpu in copied
        ),
        "",
        f"Reads (median of {args.repeat} warm runs; a month's, of {max(3, args.repeat // 10)}):",
        "",
        "| read | table | ms | backend CPU ms |",
        "|---|---|---:|---:|",
        *(f"| {label} | {table} | {wall:.2f} | {cpu:.2f} |" for label, table, wall, cpu in read),
        "",
        "An old month removed:",
        "",
        "| step | seconds | backend CPU s | rows |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {s:.2f} | {c:.2f} | {rows} |" for label, s, c, rows in removed),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
