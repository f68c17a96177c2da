"""`fabcity up`: the whole platform in one process on an SQLite file, for a first look.

The MQTT broker is Mosquitto when it is installed (a child process, MQTT 5), else amqtt in
a thread (MQTT 3.1.1); the banner says which, and what amqtt cannot do. The bridge follows the
registry as `fabcity bridge` does (`services.mqtt.watch`): a device registered through the API
is heard within a second, and the printers it must go to (Bambu, PrusaLink) are polled.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import uvicorn
from rich.console import Console
from rich.live import Live
from rich.table import Table

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.settings import Settings
from fabcity.migrations import upgrade
from fabcity.read import queries
from schemas.api import MetricsResponse
from services.cli.simulate import CITY, Simulator
from services.http.app import create_app
from services.mqtt.bridge import Bridge
from services.mqtt.embedded_broker import (
    AMQTT_LIMITS,
    Broker,
    BrokerUnavailable,
    Choice,
    Mosquitto,
    embedded_broker,
)
from workers.dispatch import LocalWorker

log = logging.getLogger(__name__)


# What the terminal view shows of the simulated city.
HEADLINE = (
    "input_kg",
    "local_input_share",
    "produced_count",
    "repaired_count",
    "waste_kg",
    "diversion_rate",
    "energy_kwh",
    "fci",
)


class PortTaken(Exception):
    pass


__all__ = ["BrokerUnavailable", "Options", "PortTaken", "run"]


def check_port(host: str, port: int, flag: str) -> None:
    """Fail early, naming the flag, when a port is taken (Mosquitto often holds 1883)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortTaken(
                    f"port {port} on {host} is already in use; choose another with {flag} "
                    f"(for example {flag} {port + 1})"
                ) from exc
            raise


@dataclass
class Options:
    host: str
    api_port: int
    mqtt_port: int
    data_dir: Path
    simulate: bool
    history_days: int = 14
    tick_s: float = 2.0
    broker: Choice = "auto"  # Mosquitto when installed, else amqtt


def run(options: Options, console: Console) -> None:
    check_port(options.host, options.api_port, "--api-port")
    check_port(options.host, options.mqtt_port, "--mqtt-port")
    options.data_dir.mkdir(parents=True, exist_ok=True)
    db_path = (options.data_dir / "fabcity.db").resolve()
    broker = embedded_broker(options.host, options.mqtt_port, options.data_dir, options.broker)
    protocol: Literal["5", "3.1.1"] = "5" if broker.mqtt5 else "3.1.1"
    settings = Settings(
        database_url=f"sqlite:///{db_path}",
        worker_mode="local",
        mqtt_host=options.host,
        mqtt_port=options.mqtt_port,
        mqtt_protocol=protocol,
        mqtt_client_id="fabcity-embedded-bridge",
        recompute_interval_s=1.0,
        # A first look on this machine: no keys. The full stack requires them (the default).
        auth="off",
    )
    upgrade.upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)

    broker.start()
    worker = LocalWorker(factory, settings).start()
    bridge = Bridge(settings, factory, worker).start()
    app = create_app(settings, "both", factory=factory, dispatcher=worker)
    server = uvicorn.Server(
        uvicorn.Config(app, host=options.host, port=options.api_port, log_level="warning")
    )
    api_thread = threading.Thread(target=server.run, name="api", daemon=True)
    api_thread.start()
    api_url = f"http://{options.host}:{options.api_port}"
    _wait_for(lambda: server.started, 20, "the API did not start")
    _wait_for(bridge.connected.is_set, 20, "the bridge could not reach the embedded broker")

    stop = threading.Event()
    sim: Simulator | None = None
    sim_thread = None
    console.print(f"[bold]fabcity[/] is up. Data in {db_path}")
    console.print(f"  Dashboard      {api_url}/")
    console.print(f"  A lab's page   {api_url}/lab (log work, upload a spreadsheet)")
    console.print(f"  API and docs   {api_url}/docs (no API keys: auth is off in this mode)")
    console.print(
        f"  MQTT broker    mqtt://{options.host}:{options.mqtt_port} "
        f"(publish to fabcity/v1/{{city}}/{{site}}/{{device}}/events)"
    )
    console.print(f"                 {_describe(broker)}", highlight=False)
    if options.simulate:
        sim = Simulator(api_url, options.host, options.mqtt_port, mqtt_protocol=protocol)
        sim.setup()
        console.print(f"  Simulated city {api_url}/v1/cities/{CITY['slug']}/metrics?interval=day")
        sim.backfill(options.history_days)
        sim_thread = threading.Thread(
            target=sim.run, args=(options.tick_s, stop), name="simulator", daemon=True
        )
        sim_thread.start()
    console.print("Press Ctrl-C to stop.\n")
    try:
        _show(factory, settings, bridge, sim, console, stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if sim_thread is not None and sim is not None:
            sim_thread.join(timeout=5)
            sim.close()
        bridge.stop()
        server.should_exit = True
        api_thread.join(timeout=10)
        worker.stop()
        broker.stop()
        engine.dispose()
        console.print("stopped.")


def _describe(broker: Broker) -> str:
    """What the banner says of the broker: what it is, and what the fallback cannot do."""
    if isinstance(broker, Mosquitto):
        version = broker.version()
        return f"Mosquitto {version}".strip() + f", MQTT 5 and 3.1.1; its log: {broker.log}"
    return f"amqtt: {AMQTT_LIMITS}"


def _wait_for(condition: object, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.05)


def _today(factory: object, city: str) -> MetricsResponse | None:
    try:
        with transaction(factory) as session:  # type: ignore[arg-type]
            return queries.metric_series(session, city, list(HEADLINE), None, None, "day", None)
    except Exception:
        return None


# Written as the dashboard writes them (services/http/static/app.js, formatValue): an index is
# a number between 0 and 1, not a percentage; a share is; a count is whole.
INDEXES = frozenset({"fci", "dido", "pito"})


def format_value(name: str, unit: str, value: float) -> str:
    if name in INDEXES:
        return f"{value:.3f}"
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:,.{4 if unit == 'kg/person' else 2}f} {unit}"


def _table(data: MetricsResponse | None, bridge: Bridge, sim: Simulator | None) -> Table:
    table = Table(title=f"{CITY['name']}: today and the last days", expand=False)
    table.add_column("metric")
    points = data.series[0].points[-4:] if data and data.series else []
    for p in points:
        table.add_column(p.start.isoformat(), justify="right")
    if data:
        for s in data.series:
            cells = []
            for p in s.points[-4:]:
                if p.value is None and p.range is not None:
                    low, high = (format_value(s.name, s.unit, v) for v in p.range)
                    cells.append(f"{low} – {high}")
                elif p.value is None:
                    cells.append("[dim]not recorded[/]")
                else:
                    cells.append(format_value(s.name, s.unit, p.value))
            table.add_row(s.name, *cells)
    caption = f"bridge stored {bridge.stored} events, {bridge.dead_lettered} dead letters"
    if sim is not None:
        caption += f"; simulator published {sim.published}, posted {sim.posted}"
    table.caption = caption
    return table


def _show(
    factory: object,
    settings: Settings,
    bridge: Bridge,
    sim: Simulator | None,
    console: Console,
    stop: threading.Event,
) -> None:
    city = str(CITY["slug"])
    if sim is None:
        while not stop.wait(3600):
            pass
        return
    if not console.is_terminal:
        while not stop.wait(10):
            console.print(_table(_today(factory, city), bridge, sim))
            sys.stdout.flush()
        return
    with Live(
        _table(_today(factory, city), bridge, sim), console=console, refresh_per_second=1
    ) as live:
        while not stop.wait(2):
            live.update(_table(_today(factory, city), bridge, sim))
