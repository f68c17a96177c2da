"""What Mosquitto's autosave costs: QoS 1 messages published into a persistent session and
drained from it, on private brokers that differ only in their autosave settings.

    python -m bench.broker_persistence [--messages 20000] [--rounds 3]

Each round runs every configuration once, in turn, on a fresh broker of its own; a
configuration's figure is the median of its rounds, and its ratio to the time-based save (which
never saves within a run: Mosquitto's default, 30 minutes) is the median of the rounds' ratios,
so that a slow minute of the shared host weighs on one round, not on one configuration. The
clients are Mosquitto's own (mosquitto_pub -l, mosquitto_sub -c), so the broker, not a Python
client, is what is measured. The host is shared and its load swings the wall-clock rate, so the
broker's own CPU time and bytes written (from /proc, psutil: its sockets and its saves) are
reported too. Mosquitto writes its whole database at each save, so a save costs more the more
the broker holds: a larger `--messages` shows it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.support.servers import Mosquitto

TOPIC = "fabcity/v1/bench/lab1/printer/events"
SESSION = "bench-persistent"
PAYLOAD = "x" * 230  # about a benchmark event's size (bench/mqtt_tools.py)
PUBLISH_CHUNK = 20_000
BASELINE = "time 1800 s (no save in the run)"


def configs(intervals: Sequence[int], seconds: Sequence[int] = ()) -> dict[str, str]:
    """Autosave settings by name: the time-based default first, then one per interval of
    changes, then one per interval of seconds."""
    named = {BASELINE: "autosave_on_changes false\nautosave_interval 1800\n"}
    for k in intervals:
        named[f"on changes, {k}"] = f"autosave_on_changes true\nautosave_interval {k}\n"
    for t in seconds:
        named[f"time {t} s"] = f"autosave_on_changes false\nautosave_interval {t}\n"
    return named


class AutosaveMosquitto(Mosquitto):
    """The shipped configuration with its autosave lines replaced."""

    def __init__(self, autosave: str) -> None:
        super().__init__()
        self.autosave = autosave

    def command(self) -> list[str]:
        command = super().command()
        path = Path(command[-1])
        conf = re.sub(r"^autosave_\w+ .*$", "", path.read_text(), flags=re.M)
        if os.geteuid() == 0:
            # Started as root, Mosquitto becomes the `mosquitto` user, which cannot write into
            # the private temporary directory: it would save nothing, silently.
            conf = "user root\n" + conf
        path.write_text(conf + "\n" + self.autosave)
        return command


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed: apt-get install mosquitto-clients")
    return found


def publish(port: int, n: int) -> float:
    """Seconds for mosquitto_pub to publish n QoS 1 messages and have them all acknowledged."""
    started = time.perf_counter()
    # In chunks: one mosquitto_pub connection that sent 100,000 messages in about two seconds
    # was dropped by Mosquitto 2.0.11 ("disconnected due to out of memory"), 20,000 never.
    for first in range(0, n, PUBLISH_CHUNK):
        lines = "".join(
            f"{i} {PAYLOAD}\n" for i in range(first, min(n, first + PUBLISH_CHUNK))
        ).encode()
        subprocess.run(
            [_tool("mosquitto_pub"), "-p", str(port), "-q", "1", "-t", TOPIC, "-l", "-M", "20"],
            input=lines, check=True,
        )  # fmt: skip
    return time.perf_counter() - started


def session(port: int, count: int | None = None) -> float:
    """Open the persistent session (count None: subscribe and leave) or drain `count`."""
    args = [_tool("mosquitto_sub"), "-p", str(port), "-q", "1", "-t", TOPIC, "-c", "-i", SESSION]
    args += ["-E"] if count is None else ["-C", str(count), "-W", "120"]
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Run:
    rate: float  # messages per second, from the first publish to the last message drained
    cpu_us: float  # broker CPU (user + system) per message, microseconds
    written_mb: float  # bytes the broker wrote (sockets and saves), MB


def run_one(autosave: str, messages: int) -> Run:
    server = AutosaveMosquitto(autosave).start()
    try:
        assert server.proc is not None
        broker = psutil.Process(server.proc.pid)
        session(server.port)
        cpu, io = broker.cpu_times(), broker.io_counters()
        elapsed = publish(server.port, messages)
        elapsed += session(server.port, messages)
        cpu_after, io_after = broker.cpu_times(), broker.io_counters()
        used = cpu_after.user + cpu_after.system - cpu.user - cpu.system
        return Run(
            messages / elapsed,
            used / messages * 1e6,
            (io_after.write_chars - io.write_chars) / 1e6,
        )
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--intervals", default="1000,100", help="autosave_interval values to compare (changes)"
    )
    parser.add_argument(
        "--seconds", default="", help="time-based autosave_interval values to compare (s)"
    )
    args = parser.parse_args()
    named = configs(
        [int(k) for k in args.intervals.split(",") if k],
        [int(t) for t in args.seconds.split(",") if t],
    )
    runs: dict[str, list[Run]] = {name: [] for name in named}
    for r in range(1, args.rounds + 1):
        for name, autosave in named.items():
            run = run_one(autosave, args.messages)
            runs[name].append(run)
            print(
                f"round {r}: {name:34} {run.rate:9,.0f} messages/s  broker "
                f"{run.cpu_us:5.1f} us/message  wrote {run.written_mb:8.1f} MB",
                flush=True,
            )
    base = BASELINE
    print(
        f"\n{args.messages:,} QoS 1 messages into a persistent session, published then "
        f"drained; median of {args.rounds} rounds"
    )
    print(
        f"  {'autosave':34} {'messages/s':>10} {'ratio':>6} {'broker us/msg':>14} {'ratio':>6} MB"
    )
    for name in named:
        pairs = list(zip(runs[name], runs[base], strict=True))
        rate = statistics.median(r.rate for r in runs[name])
        rate_ratio = statistics.median(a.rate / b.rate for a, b in pairs)
        cpu = statistics.median(r.cpu_us for r in runs[name])
        cpu_ratio = statistics.median(a.cpu_us / b.cpu_us for a, b in pairs)
        written = statistics.median(r.written_mb for r in runs[name])
        print(
            f"  {name:34} {rate:10,.0f} {rate_ratio:6.2f} {cpu:14.1f} {cpu_ratio:6.2f} "
            f"{written:.0f}"
        )


if __name__ == "__main__":
    main()
