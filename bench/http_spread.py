"""Where the round-to-round spread of `make bench`'s HTTP figure comes from.

`python -m bench.http_spread --rounds 5`: bench.run's stack, raw COPY and HTTP load, in rounds.
Each round measures the raw COPY, then every variant of the HTTP load (bench.run's
`http_batches`: `fabcity api --role ingest`, client threads posting batches of 1,000) in an
order that turns by one each round, so that no variant always runs first or last. Every API runs
with `FABCITY_HTTP_TIMING` (services/http/timing.py): one line per request from the server.

Per run it prints the rate and its ratio to the round's COPY; the clients' latency (median,
p90, max); the server's split of a request (body received, waiting for a thread, parsing,
storing, of which the commit, answering); the collector's passes and pauses; where the
machine's CPU went per event (API, PostgreSQL, the benchmark's client threads, everything else
on the machine) and the host's steal; and a probe of the host's speed (`host_speed`). Last,
across the rounds of each variant: the spread of its rate and of its ratio, and which of the
factors moved with the reference load's rate. docs/scaling.md ("HTTP: where the spread comes
from") has what it found.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import mqtt_tools
from bench.run import Cpu, Stack, http_batches, raw_copy
from services.http import timing


@dataclass(frozen=True)
class Variant:
    clients: int = 4
    workers: int = 2
    env: tuple[tuple[str, str], ...] = ()


# The load of `make bench` first; each other changes one thing.
VARIANTS: dict[str, Variant] = {
    "bench": Variant(),
    "gc-off": Variant(env=((timing.GC_ENV, "off"),)),
    "gc-default": Variant(env=((timing.GC_ENV, "default"),)),
    "threads-1": Variant(env=((timing.THREADS_ENV, "1"),)),
    "clients-2": Variant(clients=2),
    "clients-8": Variant(clients=8),
    "workers-1": Variant(workers=1),
    "workers-3": Variant(workers=3),
    "reconnect": Variant(env=((timing.RECONNECT_ENV, "always"),)),
    "reconnect-busy": Variant(env=((timing.RECONNECT_ENV, "busy"),)),
}
DEFAULT = "bench,gc-off,gc-default,threads-1,clients-2,clients-8,workers-1,reconnect"


@dataclass
class Spent:
    """bench.run's `Cpu` line, as numbers (microseconds per event, percent of the cores)."""

    platform: float
    postgres: float
    other: float
    total: float
    busy: float
    stolen: float

    @classmethod
    def parse(cls, line: str) -> Spent:
        def number(pattern: str) -> float:
            found = re.search(pattern, line)
            if found is None:
                raise ValueError(f"no {pattern!r} in {line!r}")
            return float(found.group(1).replace(",", ""))

        return cls(
            number(r", \S+ (-?\d+) us, PostgreSQL"),
            number(r"PostgreSQL (-?\d+) us"),
            number(r"other (-?\d+) us"),
            number(r"total (-?\d+) us"),
            number(r"cores (\d+) % busy"),
            number(r"(\d+) % stolen"),
        )


@dataclass
class Run:
    round: int
    variant: str
    rate: float
    copy: float
    spent: Spent
    client_us: float  # the benchmark's own CPU per event while it posted (its client threads)
    latencies: list[float]
    requests: list[dict[str, Any]] = field(default_factory=list)
    speed: float = float("nan")  # host_speed(), ms: higher is a slower host

    @property
    def ratio(self) -> float:
        return self.rate / self.copy

    @property
    def others_us(self) -> float:
        """CPU per event of everything on the machine that is neither this path nor its
        clients: other people's work on the shared machine, and the kernel's."""
        return self.spent.other - self.client_us

    @property
    def served(self) -> list[int]:
        """Requests served by each worker process, the busiest first."""
        by_pid: dict[int, int] = {}
        for r in self.requests:
            by_pid[r["pid"]] = by_pid.get(r["pid"], 0) + 1
        return sorted(by_pid.values(), reverse=True)

    @property
    def busiest(self) -> float:
        """The busiest worker's share of the requests: 1/workers when even."""
        served = self.served
        return served[0] / sum(served) if served else float("nan")

    def split(self) -> dict[str, float]:
        """Medians over the requests, in milliseconds; thread CPU and the collector's pauses in
        microseconds per event."""
        timed = [r for r in self.requests if "stored" in r and "sent" in r]

        def median(f: Any) -> float:
            return statistics.median(f(r) for r in timed) * 1000 if timed else float("nan")

        events = len(timed) * 1000 or 1
        gc_s, gc_n = _collector(self.requests)
        return {
            "body": median(lambda r: r["body"] - r["arrive"]),
            "wait": median(lambda r: r["start"] - r["body"]),
            "parse": median(lambda r: r["parsed"] - r["start"]),
            "store": median(lambda r: r["stored"] - r["parsed"]),
            "commit": median(lambda r: r["commit"] or 0.0),
            "answer": median(lambda r: r["sent"] - r["stored"]),
            "server": median(lambda r: r["sent"] - r["arrive"]),
            "parse_cpu_us": sum(r["parsed_cpu"] - r["start_cpu"] for r in timed) / events * 1e6,
            "store_cpu_us": sum(r["stored_cpu"] - r["parsed_cpu"] for r in timed) / events * 1e6,
            "workers_cpu_us": _workers_cpu(timed) / events * 1e6,
            "gc_us": sum(gc_s) / events * 1e6,
            "gc_ms": sum(gc_s) * 1000,
            "gc_passes": float(sum(gc_n)),
            "gc2": float(gc_n[2]),
        }

    def lines(self) -> list[str]:
        s, sp = self.spent, self.split()
        lat = sorted(self.latencies)
        p90 = lat[int(0.9 * (len(lat) - 1))] * 1000
        http_layer = sp["workers_cpu_us"] - sp["parse_cpu_us"] - sp["store_cpu_us"]
        return [
            f"  {self.variant:<10} {self.rate:>9,.0f} events/s  ratio {self.ratio:.2f}  "
            f"latency ms: median {statistics.median(lat) * 1000:.0f}, p90 {p90:.0f}, "
            f"max {lat[-1] * 1000:.0f}; requests by worker {'/'.join(map(str, self.served))}",
            f"      server ms (medians): body {sp['body']:.1f}, thread wait {sp['wait']:.1f}, "
            f"parse {sp['parse']:.1f}, store {sp['store']:.1f} (commit {sp['commit']:.1f}), "
            f"answer {sp['answer']:.1f}; whole {sp['server']:.1f}",
            f"      CPU us/event: API {s.platform:.0f} (its workers {sp['workers_cpu_us']:.1f}: "
            f"store {sp['store_cpu_us']:.1f}, parse {sp['parse_cpu_us']:.1f}, the rest "
            f"{http_layer:.1f}), PostgreSQL {s.postgres:.0f}, "
            f"clients {self.client_us:.1f}, others {self.others_us:.0f}; cores {s.busy:.0f} % "
            f"busy, {s.stolen:.0f} % stolen",
            f"      collector: {sp['gc_passes']:.0f} passes ({sp['gc2']:.0f} full), "
            f"{sp['gc_ms']:.1f} ms, {sp['gc_us']:.2f} us/event; host speed probe "
            f"{self.speed:.1f} ms",
        ]


def _workers_cpu(requests: Sequence[dict[str, Any]]) -> float:
    """CPU seconds of the API's worker processes over the load, to the microsecond (bench.run's
    line rounds to whole microseconds per event): each process's after its last request less
    before its first."""
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for r in requests:
        by_pid.setdefault(r["pid"], []).append(r)
    return float(
        sum(
            max(r["after"]["cpu"] for r in mine) - min(r["before"]["cpu"] for r in mine)
            for mine in by_pid.values()
        )
    )


def _collector(requests: Sequence[dict[str, Any]]) -> tuple[list[float], list[int]]:
    """The collector's seconds and passes by generation over the load, summed over the API's
    worker processes: each process's totals after its last request less before its first."""
    seconds, passes = [0.0, 0.0, 0.0], [0, 0, 0]
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for r in requests:
        by_pid.setdefault(r["pid"], []).append(r)
    for mine in by_pid.values():
        first = min(mine, key=lambda r: r["arrive"])["before"]
        last = max(mine, key=lambda r: r["sent"] if "sent" in r else r["arrive"])["after"]
        for g in range(3):
            seconds[g] += last["gc_s"][g] - first["gc_s"][g]
            passes[g] += last["gc_count"][g] - first["gc_count"][g]
    return seconds, passes


def host_speed() -> float:
    """CPU milliseconds (of this thread, so not the time it waited for a core) of a fixed piece
    of Python like the API's: events read from JSON and rows built from them; the median of
    five. The same work costs more CPU when the host's cores are slower (other machines on
    the same host, its clock), which no process here and no steal time shows."""
    events = [orjson.loads(mqtt_tools.event(i, "probe", "p")[1]) for i in range(1000)]
    body = orjson.dumps(events)
    tries = []
    for _ in range(5):
        started = time.thread_time()
        for _ in range(10):
            rows = [
                (e["source"], e["id"], e["time"][:10], str(e["data"])) for e in orjson.loads(body)
            ]
            rows.sort()
        tries.append((time.thread_time() - started) * 1000)
    return statistics.median(tries)


def measure(
    stack: Stack, round_: int, name: str, variant: Variant, n: int, copy: float, out: Path
) -> Run:
    prefix = out / f"r{round_}-{name}"
    latencies: list[float] = []
    cpu_at: list[float] = []
    speed = host_speed()
    env = {timing.ENV: str(prefix), **dict(variant.env)}
    rate, spent = http_batches(
        stack,
        n,
        clients=variant.clients,
        workers=variant.workers,
        env=env,
        latencies=latencies,
        started_load=lambda _: cpu_at.append(time.process_time()),
    )
    client_us = (time.process_time() - cpu_at[0]) / n * 1e6
    requests = [
        orjson.loads(line)
        for path in sorted(out.glob(f"{prefix.name}.*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    run = Run(round_, name, rate, copy, Spent.parse(spent), client_us, latencies, requests)
    run.speed = (speed + host_speed()) / 2  # before and after the load
    return run


def correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:
        return float("nan")


def summary(runs: list[Run], names: list[str]) -> list[str]:
    lines = ["", "Across the rounds (median; min-max):"]
    for name in names:
        mine = [r for r in runs if r.variant == name]
        rates, ratios = [r.rate for r in mine], [r.ratio for r in mine]
        api = [r.spent.platform for r in mine]
        lines.append(
            f"  {name:<10} rate {statistics.median(rates):>9,.0f} ({min(rates):,.0f}-"
            f"{max(rates):,.0f}); ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-"
            f"{max(ratios):.2f}); API {statistics.median(api):.1f} us/event "
            f"({min(api):.0f}-{max(api):.0f}); busiest worker's share "
            f"{', '.join(f'{r.busiest:.2f}' for r in mine)}"
        )
    base = [r for r in runs if r.variant == names[0]]
    if len(base) >= 3:
        rates = [r.rate for r in base]
        factors: dict[str, list[float]] = {
            "busiest worker's share": [r.busiest for r in base],
            "host speed probe ms": [r.speed for r in base],
            "COPY rate": [r.copy for r in base],
            "API CPU us/event": [r.spent.platform for r in base],
            "PostgreSQL CPU us/event": [r.spent.postgres for r in base],
            "clients CPU us/event": [r.client_us for r in base],
            "others' CPU us/event": [r.others_us for r in base],
            "cores busy %": [r.spent.busy for r in base],
            "stolen %": [r.spent.stolen for r in base],
            "collector ms": [r.split()["gc_ms"] for r in base],
            "thread wait ms": [r.split()["wait"] for r in base],
            "commit ms": [r.split()["commit"] for r in base],
        }
        lines += ["", f"What moved with {names[0]}'s rate over the rounds (Pearson r):"]
        for factor, values in factors.items():
            lines.append(
                f"  {factor:<24} r = {correlation(values, rates):+.2f}  "
                f"({', '.join(f'{v:,.1f}' for v in values)})"
            )
        every = [r for r in runs if r.variant in names]
        lines.append(
            f"  over all {len(every)} runs, API CPU us/event with the host speed probe: r = "
            f"{correlation([r.speed for r in every], [r.spent.platform for r in every]):+.2f}"
        )
        ratios = [r.ratio for r in base]
        lines.append(
            f"  and the ratio with the COPY rate: r = "
            f"{correlation([r.copy for r in base], ratios):+.2f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=100_000, help="per COPY and per HTTP run")
    parser.add_argument(
        "--variants",
        default=DEFAULT,
        help=f"comma list, the first the reference: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--keep", type=Path, help="keep the servers' timing lines here")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    out = args.keep or Path(tempfile.mkdtemp(prefix="http-spread-"))
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack()
    runs: list[Run] = []
    try:
        for r in range(1, args.rounds + 1):
            cpu = Cpu(stack, None)
            copy = raw_copy(stack, args.events)
            copy_spent = Spent.parse(cpu.per_event(args.events, "-"))
            print(
                f"round {r}: COPY {copy:,.0f} rows/s (PostgreSQL {copy_spent.postgres:.0f} us/row, "
                f"cores {copy_spent.busy:.0f} % busy, {copy_spent.stolen:.0f} % stolen)",
                flush=True,
            )
            turn = (r - 1) % len(names)
            for name in names[turn:] + names[:turn]:
                run = measure(stack, r, name, VARIANTS[name], args.events, copy, out)
                runs.append(run)
                print("\n".join(run.lines()), flush=True)
    except (subprocess.SubprocessError, RuntimeError) as exc:
        print(f"stopped: {exc}")
    finally:
        stack.close()
    print("\n".join(summary(runs, names)))
    print(f"\ntiming lines: {out}")


if __name__ == "__main__":
    main()
