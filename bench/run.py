"""`make bench`: the platform against this machine's own limits, in one run.

Starts its own Mosquitto (the shipped configuration, on a spare port), its own Redis, and a fresh
PostgreSQL database on the local server; measures the raw limits and the platform side by side;
prints one line per figure (value, raw limit, ratio) and writes docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psutil
import psycopg
from sqlalchemy import text

from bench import mqtt_tools, query_bench
from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import SiteActivity
from fabcity.migrations import upgrade
from fabcity.registry import entries
from schemas import api
from tests.support.servers import Database, Mosquitto, Redis, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
FABCITY = str(Path(sys.executable).with_name("fabcity"))
CITY = "bench"
ACTIVITY = SiteActivity.__tablename__  # events per site and window: what coverage reads
PREFIX = "fabcity/v1"


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    raw: float | None
    raw_name: str
    target: str
    holds: bool | None
    note: str = ""
    cpu: str = ""  # where the cores went (see `Cpu`)
    paired_ratio: float | None = None  # the median of ratios by round, when measured in rounds

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        return self.value / self.raw if self.raw else None

    def line(self) -> str:
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else "-"
        raw = f"{self.raw:,.1f} {self.unit}" if self.raw is not None else "-"
        verdict = {True: "holds", False: "MISSES", None: ""}[self.holds]
        return (
            f"{self.name:<38} {self.value:>10,.1f} {self.unit:<9} raw {raw:<22} "
            f"ratio {ratio:<5} target {self.target} {verdict}"
            + (f"\n    {self.cpu}" if self.cpu else "")
        )


class Stack:
    """Broker, Redis, database, and the environment of every fabcity process started."""

    def __init__(self) -> None:
        self.mosquitto = Mosquitto().start()
        self.redis = Redis().start()
        self.db = Database("bench")
        upgrade.upgrade(self.db.url)
        self.engine = make_engine(self.db.url)
        self.factory = make_sessionmaker(self.engine)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        with transaction(self.factory) as s:
            city = entries.create_city(
                s, api.CityIn(slug=CITY, name="Bench", country="ES", timezone="UTC")
            )
            for slug in mqtt_tools.SITES:
                site = entries.create_site(s, city, api.SiteIn(slug=slug, name=slug))
                entries.create_device(s, site, api.DeviceIn(slug=mqtt_tools.DEVICE, name="Printer"))
            self.city_id = city.id

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "FABCITY_DATABASE_URL": self.db.url,
            "FABCITY_REDIS_URL": self.redis.url,
            "FABCITY_REDIS_PREFIX": "bench:",
            "FABCITY_MQTT_HOST": "127.0.0.1",
            "FABCITY_MQTT_PORT": str(self.mosquitto.port),
            "FABCITY_MQTT_TOPIC_PREFIX": PREFIX,
            "FABCITY_MQTT_SHARE_GROUP": "bench",
            "FABCITY_WORKER_MODE": "celery",
            # The benchmark measures the data path, not key checks and rate limits.
            "FABCITY_AUTH": "off",
            "FABCITY_RECOMPUTE_INTERVAL_S": "2",
            **extra,
        }

    def start(self, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        path = self.mosquitto.dir / f"{args[0]}-{len(self.procs)}.log"
        log = open(path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [FABCITY, *args], env=self.env(**env), stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        self.logs[proc.pid] = path
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def count(self, table: str = "events") -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)

    def reset(self) -> None:
        with self.engine.begin() as conn:
            rollups = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'rollup_%'")
            ).scalars()
            tables = ["events", "flows", "dirty_windows", "dead_letters", *rollups]
            conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))

    def close(self) -> None:
        for proc in self.procs:
            self.stop(proc)
        self.engine.dispose()
        self.db.close()
        self.mosquitto.close()
        self.redis.close()


class Cpu:
    """CPU seconds spent between two readings by the broker, the platform's processes (one
    process and its children), PostgreSQL's processes and the whole machine: where the cores
    went, per event. Backends that exit between the readings are not counted."""

    def __init__(self, stack: Stack, proc: subprocess.Popen[bytes] | None) -> None:
        self.stack, self.proc = stack, proc
        self.start = self.read()

    def read(self) -> dict[str, float]:
        def spent(members: list[psutil.Process]) -> float:
            total = 0.0
            for p in members:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            return total

        broker = self.stack.mosquitto.proc
        platform_procs: list[psutil.Process] = []
        if self.proc is not None:
            try:
                root = psutil.Process(self.proc.pid)
                platform_procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                pass
        machine = psutil.cpu_times()
        return {
            "broker": spent([psutil.Process(broker.pid)]) if broker else 0.0,
            "platform": spent(platform_procs),
            "postgres": spent(
                [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]
            ),
            "machine": machine.user + machine.nice + machine.system + machine.irq + machine.softirq,
            # Time the hypervisor gave the machine's cores to someone else: on a shared host it
            # slows everything down and is no process's fault.
            "steal": getattr(machine, "steal", 0.0),
            "wall": time.perf_counter(),
        }

    def per_event(self, events: int, platform_name: str) -> Spent:
        end = self.read()
        d = {k: end[k] - self.start[k] for k in end}
        us = {k: v / events * 1e6 for k, v in d.items() if k != "wall"}
        other = us["machine"] - us["broker"] - us["platform"] - us["postgres"]
        cores = d["wall"] * (os.cpu_count() or 1)
        busy, stolen = d["machine"] / cores * 100, d["steal"] / cores * 100
        # What the cores could do at this cost, every one of them busy: a rate above it needs
        # less CPU per event, not more parallelism.
        ceiling = (os.cpu_count() or 1) * 1e6 / us["machine"] if us["machine"] > 0 else 0
        return Spent(
            f"CPU per event: broker {us['broker']:.0f} us, "
            f"{platform_name} {us['platform']:.0f} us, "
            f"PostgreSQL {us['postgres']:.0f} us, other {other:.0f} us; "
            f"total {us['machine']:.0f} us, so the cores, all busy, would reach "
            f"{ceiling:,.0f} events/s; "
            f"cores {busy:.0f} % busy, {stolen:.0f} % stolen by the host",
            us,
        )


class Spent(str):
    """`Cpu.per_event`'s line, which also keeps its figures (us per event by part) for the
    targets judged on them."""

    us: dict[str, float]

    def __new__(cls, line: str, us: dict[str, float]) -> Spent:
        made = super().__new__(cls, line)
        made.us = us
        return made


def tool(*args: object) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.mqtt_tools", *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return out.split()


def publish_backlog(stack: Stack, n: int, tag: str) -> float:
    _, seconds = tool("publish", stack.mosquitto.port, PREFIX, CITY, n, 0, tag)
    return n / float(seconds)


# Raw limits ---------------------------------------------------------------------------------


def raw_drain(stack: Stack, n: int, how: str = "drain") -> tuple[float, str]:
    """A bare paho subscriber (auto-ack, QoS 1) draining a backlog of n, or (`receive`) the
    bridge's own client doing nothing but receive and ack in batches: (messages/s, where the
    CPU went; the subscriber counts as "other", start-up included)."""
    topic = f"{PREFIX}/+/+/+/events"
    client_id = f"{how}-{time.monotonic_ns()}"
    tool("session", stack.mosquitto.port, client_id, topic)
    publish_backlog(stack, n, how)
    cpu = Cpu(stack, None)
    count, seconds = tool(how, stack.mosquitto.port, client_id, topic, n)
    spent = cpu.per_event(n, "-")
    tool("forget", stack.mosquitto.port, client_id)
    return int(count) / float(seconds), spent


def raw_copy(stack: Stack, n: int) -> float:
    """psycopg COPY of event-sized rows, 1,000 per statement, into a copy of `events` (same
    columns, same indexes): rows/s."""
    _, payload = mqtt_tools.event(0, CITY, "copy")
    body = payload.decode()
    url = stack.db.url.replace("postgresql+psycopg://", "postgresql://")
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE raw_copy (LIKE events INCLUDING DEFAULTS INCLUDING INDEXES)")
        columns = "source, event_id, type, time, received_at, city_id, site_id, day, hour, payload"
        started = time.perf_counter()
        for start in range(0, n, 1000):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY raw_copy ({columns}) FROM STDIN") as copy,
            ):
                for i in range(start, min(n, start + 1000)):
                    copy.write_row(
                            (f"/{CITY}/lab1/printer", f"c-{i}", "fabcity.flow", now, now,
                             stack.city_id, 1, now.date(), now.hour, body)
                        )  # fmt: skip
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE raw_copy")
    return n / seconds


# The platform -------------------------------------------------------------------------------


def bridge_drain(stack: Stack, n: int, processes: int) -> tuple[float, float, str]:
    """Bridges (`fabcity bridge --processes P`) draining a backlog of n into committed events:
    (events/s, peak RSS of the bridge processes in MiB, where the CPU went)."""
    stack.reset()
    client_id = f"bridge-{time.monotonic_ns()}"
    args = ["bridge", "--processes", str(processes)]
    # First run: create the bridges' persistent sessions in the group, then leave.
    first = stack.start(args, FABCITY_MQTT_CLIENT_ID=client_id)
    wait_until(lambda: subscribed(stack, first, processes), 30)
    stack.stop(first)
    publish_backlog(stack, n, f"b{processes}")
    proc = stack.start(args, FABCITY_MQTT_CLIENT_ID=client_id)
    peak = 0.0
    samples: list[tuple[float, int]] = []
    cpu: Cpu | None = None
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        stored = stack.count()
        samples.append((time.perf_counter(), stored))
        if stored and cpu is None:
            cpu = Cpu(stack, proc)  # from the first commit, as the rate
        peak = max(peak, rss_mib(proc))
        if stored >= n:
            break
        time.sleep(0.25)
    spent = cpu.per_event(n - samples[next(i for i, (_, c) in enumerate(samples) if c)][1],
                          "bridges") if cpu else ""  # fmt: skip
    stack.stop(proc)
    forget_bridges(stack, client_id, processes)
    started = next(i for i, (_, c) in enumerate(samples) if c > 0)
    (t0, c0), (t1, c1) = samples[started], samples[-1]
    if c1 < n:
        raise RuntimeError(f"bridges stored {c1} of {n}")
    return (c1 - c0) / (t1 - t0), peak, spent


def forget_bridges(stack: Stack, client_id: str, processes: int) -> None:
    """End the bridges' persistent sessions, so the group has no members left for later steps."""
    ids = [client_id] if processes == 1 else [f"{client_id}-p{i}" for i in range(1, processes + 1)]
    for member in ids:
        tool("forget", stack.mosquitto.port, member)


def subscribed(stack: Stack, proc: subprocess.Popen[bytes], processes: int) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(stack.logs[proc.pid].read_text())
    return stack.logs[proc.pid].read_text(errors="replace").count("subscribed to") >= processes


def rss_mib(proc: subprocess.Popen[bytes]) -> float:
    """RSS of a process and its children (a supervisor's bridges), MiB."""
    try:
        root = psutil.Process(proc.pid)
        members = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in members) / 2**20
    except psutil.Error:
        return 0.0


def http_batches(
    stack: Stack,
    n: int,
    batch: int = 1000,
    clients: int = 4,
    workers: int = 2,
    env: dict[str, str] | None = None,
    latencies: list[float] | None = None,
    started_load: Callable[[subprocess.Popen[bytes]], object] | None = None,
) -> tuple[float, str]:
    """`POST /v1/events` batches of 1,000 against `fabcity api --role ingest --workers 2`:
    (committed events/s, where the CPU went; the client threads are "other"). bench.http_spread
    passes the API's `env`, a list for each request's seconds (`latencies`), and `started_load`,
    called with the API process just before the load starts."""
    stack.reset()
    port = free_port()
    api_proc = stack.start(
        ["api", "--role", "ingest", "--port", str(port), "--workers", str(workers)],
        **(env or {}),
    )
    wait_for_port(port, 60)
    bodies = []
    for start in range(0, n, batch):
        events = [
            orjson.loads(mqtt_tools.event(i, CITY, "h")[1]) for i in range(start, start + batch)
        ]
        for e in events:
            e["source"] = e["source"].rsplit("/", 1)[0]  # a site posting, not a device
        bodies.append(orjson.dumps(events))
    url = f"http://127.0.0.1:{port}/v1/events"
    headers = {"content-type": "application/cloudevents-batch+json"}

    def post_all(mine: list[bytes]) -> int:
        accepted = 0
        with httpx.Client(timeout=120) as http:
            for body in mine:
                sent = time.perf_counter()
                r = http.post(url, content=body, headers=headers)
                if latencies is not None:
                    latencies.append(time.perf_counter() - sent)  # list.append: thread-safe
                r.raise_for_status()
                accepted += int(r.json()["accepted"])
        return accepted

    with httpx.Client() as http:  # warm both workers up
        for _ in range(4):
            http.get(f"http://127.0.0.1:{port}/healthz")
    if started_load is not None:
        started_load(api_proc)
    cpu = Cpu(stack, api_proc)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        accepted = sum(pool.map(post_all, [bodies[i::clients] for i in range(clients)]))
    seconds = time.perf_counter() - started
    spent = cpu.per_event(n, "API")
    stack.stop(api_proc)
    if accepted != n or stack.count() != n:
        raise RuntimeError(f"HTTP stored {stack.count()} of {n}")
    return n / seconds, spent


def freshness(
    stack: Stack, rate: int, seconds: int, processes: int, when: str = "spread"
) -> tuple[float, float, int]:
    """Events at `rate`/s over MQTT through bridges, Celery worker and beat, spread over 224
    hours or (`now`) at the current hour; a probe every 0.5 s on a day of its own; seconds from
    its publish to its window in the rollups: (p95, median, probes)."""
    stack.reset()
    group = f"bridge-fresh-{time.monotonic_ns()}"
    bridge = stack.start(["bridge", "--processes", str(processes)], FABCITY_MQTT_CLIENT_ID=group)
    worker = stack.start(["worker", "--concurrency", "1"])
    beat = stack.start(["beat"])
    wait_until(lambda: subscribed(stack, bridge, processes), 30)
    time.sleep(3)  # the worker's start-up
    load = subprocess.Popen(
        [sys.executable, "-m", "bench.mqtt_tools", "publish", str(stack.mosquitto.port),
         PREFIX, CITY, str(rate * seconds), str(rate), "fresh", when],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    probe = mqtt_tools.client()
    mqtt_tools.connect(probe, stack.mosquitto.port, persistent=False)
    probe.loop_start()
    sent: dict[date, float] = {}
    seen: dict[date, float] = {}
    stop = threading.Event()

    def watch() -> None:
        with stack.engine.connect() as conn:
            while not stop.is_set() or len(seen) < len(sent):
                pending = [d for d in sent if d not in seen]
                if pending:
                    rows = conn.execute(
                        text(f"SELECT day FROM {ACTIVITY} WHERE city_id = :c AND day < :d"),
                        {"c": stack.city_id, "d": date(2026, 1, 1)},
                    )
                    now = time.perf_counter()
                    for (day,) in rows:
                        seen.setdefault(day, now)
                    conn.rollback()
                if stop.wait(0.05) and time.perf_counter() > stop_at[0] + 30:
                    return

    stop_at = [float("inf")]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    first = date(2020, 1, 1)
    i = 0
    while load.poll() is None:
        day = first + timedelta(days=i)
        body = {
            "specversion": "1.0", "id": f"probe-{i}", "source": f"/{CITY}/lab1/printer",
            "type": "fabcity.flow", "time": f"{day.isoformat()}T12:00:00Z",
            "data": {"action": "consume", "resource": "filament", "quantity": 1, "unit": "kg",
                     "ring": "city"},
        }  # fmt: skip
        sent[day] = time.perf_counter()
        probe.publish(f"{PREFIX}/{CITY}/lab1/printer/events", orjson.dumps(body), qos=1)
        i += 1
        time.sleep(0.5)
    stop_at[0] = time.perf_counter()
    stop.set()
    watcher.join(60)
    probe.loop_stop()
    for proc in (bridge, worker, beat):
        stack.stop(proc)
    forget_bridges(stack, group, processes)
    lags = [seen[d] - sent[d] for d in sent if d in seen]
    missing = len(sent) - len(lags)
    lags += [float("inf")] * missing
    return p95(lags), statistics.median(lags), len(sent)


def query_p95(stack: Stack, events: int, requests: int = 200) -> tuple[float, float]:
    """Rows made with generate_series (a year over four sites), rollups rebuilt, then the
    metrics API for the year by month: (p95 ms through HTTP, ms of the same GROUP BY over raw
    flows)."""
    stack.reset()
    with stack.engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO events (source, event_id, type, time, received_at, city_id, site_id,
                                    device_id, day, hour, payload)
                SELECT '/bench/lab1/printer', 'q-' || g, 'fabcity.flow', t, t, :city,
                       s.id, d.id, t::date, extract(hour FROM t)::int, '{"data": {}}'::json
                FROM generate_series(1, :n) AS g
                CROSS JOIN LATERAL (SELECT timestamptz '2025-01-01' + (g % 365) * interval '1 day'
                                           + (g % 86400) * interval '1 second' AS t) AS tt
                JOIN sites s ON s.city_id = :city AND s.slug = 'lab' || (1 + g % 4)
                JOIN devices d ON d.site_id = s.id
                """
            ),
            {"city": stack.city_id, "n": events},
        )
        conn.execute(
            text(
                """
                INSERT INTO flows (event_pk, city_id, site_id, device_id, day, hour, action,
                                   resource, amount, ring, fate, recycled, state)
                SELECT id, city_id, site_id, device_id, day, hour, 'consume', 'filament', 250000,
                       CASE WHEN id % 3 = 0 THEN 'beyond' ELSE 'city' END, '', false,
                       'measured'
                FROM events
                """
            )
        )
        conn.execute(text("ANALYZE"))
    from fabcity.ingest.rebuild import rebuild

    rebuild(stack.factory)
    raw = []
    with stack.engine.connect() as conn:
        for _ in range(3):
            started = time.perf_counter()
            conn.execute(
                text(
                    "SELECT date_trunc('month', day), ring, sum(amount) FROM flows "
                    "WHERE city_id = :c AND action = 'consume' GROUP BY 1, 2"
                ),
                {"c": stack.city_id},
            ).all()
            raw.append((time.perf_counter() - started) * 1000)
    port = free_port()
    api_proc = stack.start(["api", "--role", "query", "--port", str(port)])
    wait_for_port(port, 60)
    url = f"http://127.0.0.1:{port}/v1/cities/{CITY}/metrics"
    params = {"names": "input_kg,local_input_share", "from": "2025-01-01", "to": "2025-12-31",
              "interval": "month"}  # fmt: skip
    times = []
    with httpx.Client(timeout=60) as http:
        for i in range(requests + 10):
            started = time.perf_counter()
            http.get(url, params=params).raise_for_status()
            if i >= 10:  # warm-up
                times.append((time.perf_counter() - started) * 1000)
    stack.stop(api_proc)
    return p95(times), statistics.median(raw)


def every_query(args: argparse.Namespace) -> Figure:
    """Every request the dashboard or a planner can make (`bench.query_bench`: every interval
    by every group_by over a year, the summary, the Sankey, ten cities compared), on a history
    of `--query-events`: the slowest p95 against the 25 ms target. A full run into docs/ also
    writes docs/query-benchmark.md."""
    with tempfile.TemporaryDirectory() as folder:
        found = Path(folder) / "queries.json"
        command = [sys.executable, "-m", "bench.query_bench", "--events", str(args.query_events),
                   "--requests", "100", "--json", str(found)]  # fmt: skip
        published = args.out.resolve() == (ROOT / "docs" / "benchmarks.md").resolve()
        if published and args.query_events >= query_bench.FULL_RUN:
            command += ["--out", str(ROOT / "docs" / "query-benchmark.md")]
        subprocess.run(command, check=True, cwd=ROOT)
        rows = orjson.loads(found.read_bytes())
    worst = max(rows, key=lambda r: r["p95"])
    held = sum(1 for r in rows if r["p95"] <= query_bench.GOAL_MS)
    return Figure(
        f"every planner query p95, {args.query_events:,} events ({len(rows)} requests)",
        worst["p95"], "ms", None, "", "<= 25 ms each", held == len(rows),
        f"{held} of {len(rows)} hold; slowest: {worst['name']}",
    )  # fmt: skip


def p95(values: list[float]) -> float:
    """The 95th percentile, by nearest rank below (NaN of nothing)."""
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))] if ordered else float("nan")


def wait_until(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not start in time")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    # 300,000: at 40,000 events/s a backlog of 100,000 drained in 2.5 s, which the database
    # count sampled every 0.25 s cannot time to better than a tenth, start and end included.
    parser.add_argument("--events", type=int, default=300_000, help="MQTT backlog per drain")
    parser.add_argument("--http-events", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of raw limit then platform, for medians"
    )
    parser.add_argument("--processes", type=int, default=2, help="bridge processes")
    parser.add_argument("--rate", type=int, default=10_000, help="freshness load, events/s")
    parser.add_argument("--fresh-seconds", type=int, default=30)
    parser.add_argument("--query-events", type=int, default=10_000_000)
    parser.add_argument(
        "--backlog", type=int, default=0, help="also drain a backlog of this many (1000000)"
    )
    parser.add_argument(
        "--steps",
        type=lambda v: set(v.split(",")),
        default={"ingest", "freshness", "query", "queries"},
        help="which of ingest,freshness,query,queries to measure (all by default)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    stack = Stack()
    figures: list[Figure] = []

    def show(f: Figure) -> None:
        figures.append(f)
        print(f.line(), flush=True)

    try:
        # The host is shared: the time its hypervisor steals from this machine's cores moved
        # between 15 % and 40 % within one run. So each platform figure is measured in rounds,
        # right after its raw limit, and the ratio is the median of the rounds' ratios.
        rounds: dict[str, list[Round]] = {"one": [], "many": [], "http": []}
        drain = copy = None
        if "ingest" in args.steps:
            receive, receive_cpu = raw_drain(stack, args.events, "receive")
        for r in range(args.rounds if "ingest" in args.steps else 0):
            drain, drain_cpu = raw_drain(stack, args.events)
            one, rss_one, cpu_one = bridge_drain(stack, args.events, 1)
            many, rss_many, cpu_many = bridge_drain(stack, args.events, args.processes)
            rounds["one"].append(Round(one, drain, cpu_one, drain_cpu, rss_one))
            rounds["many"].append(Round(many, drain, cpu_many, drain_cpu, rss_many))
            copy = raw_copy(stack, args.events)
            http, cpu_http = http_batches(stack, args.http_events)
            rounds["http"].append(Round(http, copy, cpu_http, "", 0.0))
            print(f"round {r + 1}: drain {drain:,.0f} msg/s, 1 bridge {one:,.0f}, "
                  f"{args.processes} bridges {many:,.0f}; COPY {copy:,.0f} rows/s, "
                  f"HTTP {http:,.0f} events/s", flush=True)  # fmt: skip
        if rounds["many"]:
            drain = statistics.median(x.raw for x in rounds["many"])
            copy = statistics.median(x.raw for x in rounds["http"])
            show(Figure("receive only: the bridge's client, no work", receive, "msg/s", drain,
                        "bare subscriber drain", "-", None, cpu=receive_cpu))  # fmt: skip
            # The targets of "twice as fast per event": the MQTT ratios as medians, HTTP in
            # every round (its spread is part of what is judged).
            for key, name, raw_name, target, floor, every in (
                ("one", "MQTT QoS 1 -> committed, 1 bridge", "bare subscriber drain",
                 ">= 1.5 x drain", 1.5, False),
                ("many", f"MQTT QoS 1 -> committed, {args.processes} bridges",
                 "bare subscriber drain", ">= 2.5 x drain", 2.5, False),
                ("http", "HTTP batch (1,000) -> committed", "COPY",
                 ">= 0.8 x COPY in every round", 0.8, True),
            ):  # fmt: skip
                show(paired(name, rounds[key], raw_name, target, floor, every))
            for key, procs in (("one", 1), ("many", args.processes)):
                # The bridges' own CPU per event: what stands between the path and the floor
                # of broker plus database.
                own = [x.cpu.us["platform"] for x in rounds[key] if isinstance(x.cpu, Spent)]
                if own:
                    us = statistics.median(own)
                    show(Figure(f"bridges' CPU per event, {procs} proc", us, "us", None, "",
                                "<= 25 us", us <= 25,
                                "by round: " + ", ".join(f"{x:.1f}" for x in own)))  # fmt: skip
            for key, procs in (("one", 1), ("many", args.processes)):
                peak = max(x.rss for x in rounds[key])
                show(Figure(f"bridge RSS, backlog {args.events:,}, {procs} proc", peak, "MiB", None,
                            "", "bounded", None, "peak over the rounds"))  # fmt: skip
        if "freshness" in args.steps:
            for when, label in (("spread", "over 224 hours"), ("now", "at the current hour")):
                p95, median, probes = freshness(
                    stack, args.rate, args.fresh_seconds, args.processes, when
                )
                note = f"median {median:.2f} s over {probes} probes"
                show(Figure(f"freshness p95 at {args.rate:,} events/s {label}", p95, "s", None, "",
                            "<= 1 s", p95 <= 1, note))  # fmt: skip
        if "query" in args.steps:
            q95, raw_ms = query_p95(stack, args.query_events)
            show(Figure(f"query p95, {args.query_events:,} events", q95, "ms", raw_ms,
                        "GROUP BY over raw flows", "<= 25 ms", q95 <= 25))  # fmt: skip
        if "queries" in args.steps:
            show(every_query(args))
        if args.backlog:
            rate, rss, spent = bridge_drain(stack, args.backlog, 1)
            show(Figure(f"bridge RSS, backlog {args.backlog:,}, 1 proc", rss, "MiB", None, "",
                        "bounded", None, f"drained at {rate:,.0f} events/s", spent))  # fmt: skip
    finally:
        stack.close()
    raw_cpu = rounds["many"][0].raw_cpu if rounds["many"] else ""
    write_report(args, figures, drain, copy, raw_cpu)


@dataclass
class Round:
    value: float
    raw: float  # the raw limit measured just before, in the same round
    cpu: str
    raw_cpu: str
    rss: float

    @property
    def ratio(self) -> float:
        return self.value / self.raw


def paired(
    name: str, rounds: list[Round], raw_name: str, target: str, floor: float, every: bool = False
) -> Figure:
    """A figure from rounds: the median value, the median raw limit, the median of the rounds'
    own ratios (each against the raw limit measured minutes before it), every ratio listed. It
    holds when the median ratio reaches `floor`, or with `every`, when each round's does."""
    ordered = sorted(rounds, key=lambda x: x.ratio)
    middle = ordered[(len(ordered) - 1) // 2]
    ratio = statistics.median(x.ratio for x in rounds)
    return Figure(
        name,
        statistics.median(x.value for x in rounds),
        "events/s",
        statistics.median(x.raw for x in rounds),
        raw_name,
        target,
        min(x.ratio for x in rounds) >= floor if every else ratio >= floor,
        "ratios by round: " + ", ".join(f"{x.ratio:.2f}" for x in rounds),
        middle.cpu,
        ratio,
    )


def write_report(
    args: argparse.Namespace,
    figures: list[Figure],
    drain: float | None,
    copy: float | None,
    drain_cpu: str,
) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench.run`); numbers from one run on one machine, so",
        "compare within the table, not across machines. Runs here vary by 20-30 %, more when the",
        "host steals time from the cores (the CPU lines below say how much).",
        "",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"`{' '.join(sys.argv[1:]) or '(defaults)'}`",
        "",
        "| figure | value | raw limit | ratio | target | |",
        "|---|---|---|---|---|---|",
    ]
    if drain is not None and copy is not None:
        lines[-2:-2] = [
            f"Raw limits measured in the same run (medians of {args.rounds} rounds): a bare paho "
            f"subscriber drains a QoS 1 backlog at **{drain:,.0f} msg/s**; psycopg COPY stores "
            f"**{copy:,.0f} rows/s**. Each ingest figure is the median of {args.rounds} rounds, "
            "each measured right after its raw limit; its ratio is the median of the rounds' "
            "ratios.",
            "",
        ]
    for f in figures:
        raw = f"{f.raw:,.1f} ({f.raw_name})" if f.raw is not None else ""
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else ""
        verdict = {True: "holds", False: "misses", None: ""}[f.holds]
        note = f" ({f.note})" if f.note else ""
        lines.append(
            f"| {f.name} | {f.value:,.1f} {f.unit}{note} | {raw} | {ratio} | {f.target} | "
            f"{verdict} |"
        )
    spent = [f"- {f.name}: {f.cpu}" for f in figures if f.cpu]
    spent += [f"- bare subscriber drain: {drain_cpu}"] if drain_cpu else []
    if spent:
        intro = (
            "Where the CPU went, per event, over the same interval as each rate (the raw "
            "drains' subscriber and the HTTP clients count as other):"
        )
        lines += ["", intro, "", *spent]
    method = (ROOT / "bench" / "METHOD.md").read_text()
    args.out.write_text("\n".join(lines) + "\n\n" + method)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
