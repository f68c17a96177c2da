"""Scale-out on one machine: two ingest APIs, two bridges and two workers on one PostgreSQL.

    .venv/bin/python -m bench.scale_out [--seconds 60] [--rate 5000] [--out FILE]
    .venv/bin/python -m bench.scale_out --seconds 8 --rate 1000 --events 20000  # a smoke run

Starts (on bench.run's `Stack`: its own Mosquitto and Redis, a fresh database `bench_*`) two
`fabcity api --role ingest` processes on two ports, `fabcity bridge --processes 2`, two
`fabcity worker --concurrency 1` and one beat; then, for `--seconds`, drives both paths at once:
a paced MQTT publisher (`--rate` events/s at the current hour) and HTTP clients posting batches
of 1,000, split over the two APIs. A probe every 0.5 s, in turn through MQTT and through HTTP,
on a day of its own, is timed until its day appears in the rollups. Measured over the load:
events committed per second, probe freshness, and the CPU each group of processes spent per
committed event, PostgreSQL's split by whose connection its backend serves. From PostgreSQL's
share: the rate at which one PostgreSQL host of N cores is fully busy.

Prints a Markdown report (paste it into docs/scaling.md); `--out` writes it to a file too.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psutil
from sqlalchemy import text

from bench import mqtt_tools
from bench.run import (
    ACTIVITY,
    CITY,
    PREFIX,
    ROOT,
    Cpu,
    Stack,
    forget_bridges,
    p95,
    subscribed,
    wait_until,
)
from fabcity.core.models import PendingRollup
from tests.support.servers import free_port, wait_for_port

BATCH = 1000
PROBE_EVERY_S = 0.5
FIRST_PROBE_DAY = date(2020, 1, 1)  # probes land before any load event: one day each
HOST_CORES = (2, 4, 8, 16, 32, 64)
# A database host is not run at 100 % CPU: autovacuum, checkpoints, queries and a spike need
# room. The usable rate is quoted at this share of its cores.
USABLE = 0.7


@dataclass
class Topology:
    apis: list[subprocess.Popen[bytes]]
    ports: list[int]
    bridge: subprocess.Popen[bytes]
    bridge_group: str
    workers: list[subprocess.Popen[bytes]]
    beat: subprocess.Popen[bytes]

    def groups(self) -> dict[str, list[subprocess.Popen[bytes]]]:
        return {
            "bridges": [self.bridge],
            "APIs": self.apis,
            "workers": [*self.workers, self.beat],
        }


def start(stack: Stack, apis: int, bridges: int, workers: int) -> Topology:
    """Separate API processes on ports of their own, as pods behind the ingress would be (one
    `--workers N` process shares one socket instead, which a second host cannot)."""
    ports = [free_port() for _ in range(apis)]
    api_procs = [
        stack.start(["api", "--role", "ingest", "--port", str(p), "--workers", "1"]) for p in ports
    ]
    group = f"scale-{time.monotonic_ns()}"
    bridge = stack.start(["bridge", "--processes", str(bridges)], FABCITY_MQTT_CLIENT_ID=group)
    worker_procs = [stack.start(["worker", "--concurrency", "1"]) for _ in range(workers)]
    beat = stack.start(["beat"])
    for p in ports:
        wait_for_port(p, 60)
    wait_until(lambda: subscribed(stack, bridge, bridges), 60)
    time.sleep(3)  # the workers' start-up
    return Topology(api_procs, ports, bridge, group, worker_procs, beat)


# CPU by group --------------------------------------------------------------------------------


def backends(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving `database` (its title names it)."""
    found = {}
    for p in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(p.info["cmdline"] or [])
        if p.info["name"] == "postgres" and f" {database} " in title:
            try:
                t = p.cpu_times()
                found[p.pid] = t.user + t.system
            except psutil.Error:
                pass
    return found


def client_ports(procs: list[subprocess.Popen[bytes]]) -> set[int]:
    """Local ports of the TCP connections these process trees hold to PostgreSQL."""
    ports = set()
    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                for c in p.net_connections(kind="tcp"):
                    if c.raddr and c.raddr.port == 5432:
                        ports.add(c.laddr.port)
        except psutil.Error:
            pass
    return ports


@dataclass
class Spent:
    """CPU seconds per group over the load, the machine's total, wall seconds."""

    groups: dict[str, float]
    machine: float
    steal: float
    wall: float
    postgres_all: float  # every postgres process on the host, other databases' work included
    postgres_by: dict[str, float] = field(default_factory=dict)


class GroupCpu:
    """bench.run's `Cpu` for each process of each group, plus PostgreSQL's backends of the
    benchmark's database, each attributed to the group whose connection it serves."""

    def __init__(
        self,
        stack: Stack,
        groups: dict[str, list[subprocess.Popen[bytes]]],
        load: subprocess.Popen[bytes],
    ) -> None:
        self.stack, self.groups, self.load = stack, groups, load
        self.me = psutil.Process()
        self.cpus = {name: [Cpu(stack, p) for p in procs] for name, procs in groups.items()}
        self.load_cpu = Cpu(stack, load)
        self.whole = Cpu(stack, None)  # broker, all of PostgreSQL, the machine, the wall
        self.me_start = self._me()
        self.backends = backends(stack.db.name)

    def _me(self) -> float:
        t = self.me.cpu_times()
        return float(t.user + t.system)

    def read(self) -> Spent:
        def delta(cpu: Cpu, key: str) -> float:
            return cpu.read()[key] - cpu.start[key]

        groups = {name: sum(delta(c, "platform") for c in cpus) for name, cpus in self.cpus.items()}
        # The benchmark's own work: the publisher, the HTTP clients, the probes.
        groups["load"] = delta(self.load_cpu, "platform") + self._me() - self.me_start
        end = self.whole.read()
        d = {k: end[k] - self.whole.start[k] for k in end}
        groups["broker"] = d["broker"]
        now = backends(self.stack.db.name)
        owner = self._owners()
        by: dict[str, float] = {}
        for pid, seconds in now.items():
            who = owner.get(pid, "connections closed during the load")
            by[who] = by.get(who, 0.0) + seconds - self.backends.get(pid, 0.0)
        groups["PostgreSQL"] = sum(by.values())
        return Spent(groups, d["machine"], d["steal"], d["wall"], d["postgres"], by)

    def _owners(self) -> dict[int, str]:
        """Backend pid → the group holding its connection (pg_stat_activity's client port)."""
        by_port = {port: name for name, ps in self.groups.items() for port in client_ports(ps)}
        with self.stack.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT pid, client_port FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).all()
        return {pid: by_port.get(port, "the benchmark") for pid, port in rows}


# Load ----------------------------------------------------------------------------------------


def bodies(n: int) -> list[bytes]:
    """Batches of 1,000 benchmark events at the current hour, posted by a site."""
    out = []
    for start in range(0, n, BATCH):
        events = [
            orjson.loads(mqtt_tools.event(i, CITY, "h", "now")[1])
            for i in range(start, start + BATCH)
        ]
        for e in events:
            e["source"] = e["source"].rsplit("/", 1)[0]  # a site posting, not a device
        out.append(orjson.dumps(events))
    return out


def post_until(url: str, mine: list[bytes], stop: threading.Event, rate: float) -> int:
    """POST batches until `stop` or none left (at `rate` events/s, 0: as fast as answered)."""
    accepted = 0
    headers = {"content-type": "application/cloudevents-batch+json"}
    started = time.perf_counter()
    with httpx.Client(timeout=120) as http:
        for k, body in enumerate(mine):
            if stop.is_set():
                break
            if rate:
                ahead = started + k * BATCH / rate - time.perf_counter()
                if ahead > 0 and stop.wait(ahead):
                    break
            r = http.post(url, content=body, headers=headers)
            r.raise_for_status()
            accepted += int(r.json()["accepted"])
    return accepted


@dataclass
class Probes:
    """One event every 0.5 s on a day of its own, through MQTT and HTTP in turn; seconds from
    sending it to its day appearing in the rollups the metrics API reads."""

    stack: Stack
    ports: list[int]
    sent: dict[date, tuple[str, float]] = field(default_factory=dict)
    seen: dict[date, float] = field(default_factory=dict)

    def run(self, until: float) -> None:
        mqtt = mqtt_tools.client()
        mqtt_tools.connect(mqtt, self.stack.mosquitto.port, persistent=False)
        mqtt.loop_start()
        http = httpx.Client(timeout=60)
        i = 0
        try:
            while time.perf_counter() < until:
                day = FIRST_PROBE_DAY + timedelta(days=i)
                via = "MQTT" if i % 2 == 0 else "HTTP"
                body = {
                    "specversion": "1.0", "id": f"probe-{i}", "type": "fabcity.flow",
                    "source": f"/{CITY}/lab1/printer" if via == "MQTT" else f"/{CITY}/lab1",
                    "time": f"{day.isoformat()}T12:00:00Z",
                    "data": {"action": "consume", "resource": "filament", "quantity": 1,
                             "unit": "kg", "ring": "city"},
                }  # fmt: skip
                self.sent[day] = (via, time.perf_counter())
                if via == "MQTT":
                    mqtt.publish(f"{PREFIX}/{CITY}/lab1/printer/events", orjson.dumps(body), qos=1)
                else:
                    port = self.ports[(i // 2) % len(self.ports)]
                    http.post(
                        f"http://127.0.0.1:{port}/v1/events",
                        content=orjson.dumps(body),
                        headers={"content-type": "application/cloudevents+json"},
                    ).raise_for_status()
                i += 1
                time.sleep(PROBE_EVERY_S)
        finally:
            http.close()
            mqtt.loop_stop()
            mqtt.disconnect()

    def watch(self, stop: threading.Event) -> None:
        """Poll the rollups every 50 ms until stopped and every probe sent is seen."""
        with self.stack.engine.connect() as conn:
            while not stop.is_set() or len(self.seen) < len(self.sent):
                if len(self.seen) < len(self.sent):
                    rows = conn.execute(
                        text(f"SELECT day FROM {ACTIVITY} WHERE city_id = :c AND day < :d"),
                        {"c": self.stack.city_id, "d": date(2026, 1, 1)},
                    )
                    now = time.perf_counter()
                    for (day,) in rows:
                        self.seen.setdefault(day, now)
                    conn.rollback()
                time.sleep(0.05)

    def lags(self, via: str | None = None) -> list[float]:
        """Sorted seconds to visible (a probe never seen counts as infinitely late)."""
        return sorted(
            self.seen[d] - t if d in self.seen else float("inf")
            for d, (path, t) in self.sent.items()
            if via in (None, path)
        )


# The run -------------------------------------------------------------------------------------


@dataclass
class Result:
    seconds: float
    committed: int
    mqtt_sent: int
    http_accepted: int
    drained_s: float
    spent: Spent
    probes: Probes
    storage_bytes: float


def measure(args: argparse.Namespace) -> Result:
    stack = Stack()
    try:
        top = start(stack, args.apis, args.bridges, args.workers)
        try:
            return load(stack, top, args)
        finally:
            for proc in (*top.apis, top.bridge, *top.workers, top.beat):
                stack.stop(proc)
            forget_bridges(stack, top.bridge_group, args.bridges)
    finally:
        stack.close()


def load(stack: Stack, top: Topology, args: argparse.Namespace) -> Result:
    batches = bodies(args.http_events)
    # More than the window needs, so that the publisher is still running when it closes (its
    # CPU is read then); the rest is drained afterwards, outside the figures.
    mqtt_n = int(args.rate * (args.seconds + 5))
    publisher = subprocess.Popen(
        [sys.executable, "-m", "bench.mqtt_tools", "publish", str(stack.mosquitto.port),
         PREFIX, CITY, str(mqtt_n), str(args.rate), "m", "now"],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # its start-up (imports, connection) is not load
    probes = Probes(stack, top.ports)
    stop_watch = threading.Event()
    watcher = threading.Thread(target=probes.watch, args=(stop_watch,), daemon=True)
    watcher.start()
    stop_http = threading.Event()
    urls = [f"http://127.0.0.1:{p}/v1/events" for p in top.ports]
    per_client = args.http_rate / args.http_clients
    cpu = GroupCpu(stack, top.groups(), publisher)
    first = stack.count()
    started = time.perf_counter()
    until = started + args.seconds
    with ThreadPoolExecutor(args.http_clients) as pool:
        posting = [
            pool.submit(
                post_until, urls[i % len(urls)], batches[i :: args.http_clients], stop_http,
                per_client,
            )
            for i in range(args.http_clients)
        ]  # fmt: skip
        probes.run(until)
        stop_http.set()
        accepted = sum(f.result() for f in posting)
    last = stack.count()
    seconds = time.perf_counter() - started
    spent = cpu.read()
    if publisher.wait(600) != 0:
        raise RuntimeError("the MQTT publisher failed")
    expected = mqtt_n + accepted + len(probes.sent)
    deadline = time.monotonic() + 600
    while stack.count() < expected and time.monotonic() < deadline:
        time.sleep(0.25)
    drained = time.perf_counter() - started - seconds
    if stack.count() < expected:
        raise RuntimeError(f"stored {stack.count()} of {expected}")
    stop_watch.set()
    watcher.join(60)
    with stack.engine.connect() as conn:
        size = conn.execute(
            text(
                "SELECT pg_total_relation_size('events') + pg_total_relation_size('flows')"
                f" + pg_total_relation_size('{PendingRollup.__tablename__}')"
            )
        ).scalar()
    return Result(
        seconds,
        last - first,
        mqtt_n,
        accepted,
        drained,
        spent,
        probes,
        float(size or 0) / max(1, stack.count()),
    )


# The report ----------------------------------------------------------------------------------

ORDER = ("broker", "bridges", "APIs", "workers", "PostgreSQL", "load")


def report(r: Result, args: argparse.Namespace) -> str:
    s, n = r.spent, r.committed
    cores = os.cpu_count() or 1
    rate = n / r.seconds

    def us(seconds: float) -> str:
        return f"{seconds / n * 1e6:,.0f}"

    ours = sum(s.groups.values())
    rest = s.machine - ours
    lines = [
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {cores} cores, "
        f"Python {platform.python_version()}: `python -m bench.scale_out "
        f"{' '.join(sys.argv[1:]) or '(defaults)'}`",
        "",
        f"{args.apis} `fabcity api --role ingest` processes, `fabcity bridge --processes "
        f"{args.bridges}`, {args.workers} `fabcity worker --concurrency 1` and a beat, on one "
        f"PostgreSQL; for {r.seconds:.0f} s, MQTT at {args.rate:,} events/s and "
        f"{args.http_clients} HTTP clients "
        + (f"at {args.http_rate:,} events/s" if args.http_rate else "as fast as answered")
        + " (batches of 1,000, split over the APIs).",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| committed, both paths | **{rate:,.0f} events/s** ({n:,} in {r.seconds:.1f} s) |",
        f"| of which HTTP (accepted) | {r.http_accepted / r.seconds:,.0f} events/s |",
        f"| MQTT published | {args.rate:,} events/s; all stored {r.drained_s:.1f} s after the "
        "load ended |",
    ]
    for via in (None, "MQTT", "HTTP"):
        lags = r.probes.lags(via)
        label = f"through {via}" if via else "all probes"
        lines.append(
            f"| freshness p95, {label} | **{p95(lags):.2f} s** (median "
            f"{statistics.median(lags):.2f} s, {len(lags)} probes) |"
            if lags
            else f"| freshness, {label} | no probes |"
        )
    lines += [
        f"| cores busy (machine) | {s.machine / s.wall / cores * 100:.0f} % "
        f"({s.steal / s.wall / cores * 100:.0f} % stolen by the host) |",
        f"| storage (events, flows, marks) | {r.storage_bytes:,.0f} bytes per event |",
        "",
        "CPU by group of processes: per committed event (both paths), per event of the "
        "group's own path (MQTT for the broker and the bridges, HTTP for the APIs), and in "
        "cores (CPU seconds per second of the load):",
        "",
        "| group | µs per event | µs per event of its path | cores |",
        "|---|---:|---:|---:|",
    ]
    # The API answers after its commit, so what it accepted is committed; the rest is MQTT.
    paths = {"MQTT": max(1, n - r.http_accepted), "HTTP": max(1, r.http_accepted)}
    own = {"broker": "MQTT", "bridges": "MQTT", "APIs": "HTTP"}

    def row(label: str, name: str, seconds: float) -> str:
        path = own.get(name)
        mine = f"{seconds / paths[path] * 1e6:,.0f} ({path})" if path else ""
        return f"| {label} | {us(seconds)} | {mine} | {seconds / s.wall:.2f} |"

    for name in ORDER:
        lines.append(row(name, name, s.groups[name]))
        if name == "PostgreSQL":
            for who, sec in sorted(s.postgres_by.items()):
                lines.append(row(f"· serving {who}", who, sec))
    lines += [
        row("rest of the machine (kernel, other work on the host)", "", rest),
        f"| **machine** | **{us(s.machine)}** | | {s.machine / s.wall:.2f} |",
        "",
        f"PostgreSQL as a whole (every database on the server) spent {us(s.postgres_all)} µs "
        "per event over the same interval; the difference is other databases' work and the "
        "server's shared processes (WAL writer, checkpointer).",
    ]
    pg = s.groups["PostgreSQL"] / n * 1e6
    if pg > 0:
        lines += [
            "",
            f"One PostgreSQL host at {pg:,.0f} µs of CPU per event (ingest and rollups, "
            f"measured above), all its cores busy, and at {USABLE:.0%} of them:",
            "",
            f"| database host cores | events/s, all busy | events/s at {USABLE:.0%} |",
            "|---:|---:|---:|",
            *(f"| {c} | {c * 1e6 / pg:,.0f} | {USABLE * c * 1e6 / pg:,.0f} |" for c in HOST_CORES),
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="length of the load")
    parser.add_argument("--rate", type=int, default=5000, help="MQTT events/s")
    parser.add_argument("--http-rate", type=int, default=0, help="HTTP events/s (0: unpaced)")
    parser.add_argument("--http-clients", type=int, default=4)
    parser.add_argument(
        "--http-events",
        "--events",
        type=int,
        default=1_200_000,
        help="most events posted over HTTP (prepared before the load)",
    )
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--bridges", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    text_ = report(measure(args), args)
    print(text_)
    if args.out:
        args.out.write_text(text_ + "\n")


if __name__ == "__main__":
    main()
