"""`fabcity up`'s ingest rate with each embedded broker: Mosquitto (MQTT 5) and amqtt (3.1.1).

    python -m bench.embedded_up [N] [ROUNDS]

Each round runs `fabcity up --no-simulate --broker B` on spare ports and a fresh data
directory, registers a city with four labs' printers, publishes N native events at QoS 1
from a process of its own (`bench/mqtt_tools.py: event`, about 230 bytes each; MQTT 5 to
Mosquitto, 3.1.1 to amqtt), and times from the first publish until the N-th event is
committed in the SQLite file. The brokers alternate within a round, so that each ratio
compares runs minutes apart on the same cores; the report gives each round's rates and the
median ratio.
"""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.mqtt_tools import DEVICE, SITES, event

FABCITY = str(Path(sys.executable).with_name("fabcity"))
CITY = "benchville"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def publish(port: int, protocol: str, n: int) -> None:
    """N events at QoS 1, as fast as the broker acknowledges them (one thread, as in
    bench/mqtt_tools.py: paho's loop in another thread stalls under load)."""
    version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=version)
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1

    c.on_publish = on_publish
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    for i in range(n):
        site, payload = event(i, CITY, "up", "now")
        c.publish(f"fabcity/v1/{CITY}/{site}/{DEVICE}/events", payload, qos=1)
        if i % 50 == 49:
            c.loop(0)
            while i - acked > 5_000:
                c.loop(0.01)
    deadline = time.monotonic() + 600
    while acked < n and time.monotonic() < deadline:
        c.loop(0.1)
    c.disconnect()


def stored(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            count: int = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            return count
    except sqlite3.Error:
        return 0


def one_run(broker: str, n: int) -> float:
    """Events per second through `fabcity up` with this broker."""
    with tempfile.TemporaryDirectory(prefix="fabcity-up-bench-") as tmp:
        data = Path(tmp)
        api_port, mqtt_port = free_port(), free_port()
        up = subprocess.Popen(
            [FABCITY, "up", "--no-simulate", "--broker", broker, "--data-dir", str(data),
             "--api-port", str(api_port), "--mqtt-port", str(mqtt_port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert up.stdout is not None
            for line in up.stdout:
                if "Press Ctrl-C" in line:
                    break
            api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30)
            city = {"slug": CITY, "name": "Bench", "country": "ES", "timezone": "UTC"}
            api.post("/v1/cities", json=city).raise_for_status()
            for site in SITES:
                api.post(f"/v1/cities/{CITY}/sites", json={"slug": site, "name": site})
                api.post(
                    f"/v1/cities/{CITY}/sites/{site}/devices",
                    json={"slug": DEVICE, "name": DEVICE},
                ).raise_for_status()
            protocol = "5" if broker == "mosquitto" else "3.1.1"
            started = time.perf_counter()
            publisher = subprocess.Popen(
                [sys.executable, "-m", "bench.embedded_up", "publish", str(mqtt_port),
                 protocol, str(n)]
            )  # fmt: skip
            db = data / "fabcity.db"
            deadline = time.monotonic() + 900
            while stored(db) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{broker}: only {stored(db)} of {n} stored")
                time.sleep(0.1)
            elapsed = time.perf_counter() - started
            publisher.wait(60)
            return n / elapsed
        finally:
            up.terminate()
            up.wait(60)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    ratios = []
    for r in range(1, rounds + 1):
        fast = one_run("mosquitto", n)
        slow = one_run("amqtt", n)
        ratios.append(fast / slow)
        print(
            f"round {r}: Mosquitto {fast:,.0f} events/s, amqtt {slow:,.0f} events/s, "
            f"ratio {fast / slow:.2f}",
            flush=True,
        )
    print(f"median ratio over {rounds} rounds of {n:,} events: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        publish(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        main()
