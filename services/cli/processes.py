"""The long-running `fabcity` processes: up, api, bridge, worker, beat; and migrate, simulate."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fabcity.core import gc_tuning
from fabcity.core.logs import configure
from fabcity.core.settings import Settings, get_settings
from services.cli.common import console, database, fail

# Nameless: the root app takes these commands as its own.
app = typer.Typer()


class EmbeddedMqtt(StrEnum):
    """The broker `fabcity up` runs (services.mqtt.embedded_broker.Choice)."""

    auto = "auto"
    mosquitto = "mosquitto"
    amqtt = "amqtt"


class Role(StrEnum):
    both = "both"
    ingest = "ingest"
    query = "query"


def _logging() -> None:
    configure(get_settings().log_format)


def _serve_metrics(port: int | None, registry: object = None) -> None:
    if port is not None:
        # lazy: prometheus_client picks its value class on import, after `worker` set its dir
        from prometheus_client import REGISTRY, start_http_server

        start_http_server(port, addr="0.0.0.0", registry=registry or REGISTRY)  # type: ignore[arg-type]


def _until_stopped() -> threading.Event:
    """An event set by SIGTERM or SIGINT: what a supervising process waits on."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


@app.command()
def up(
    api_port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 8000,
    # 1884, not MQTT's 1883 (as `make run`): a system Mosquitto often holds 1883 already.
    mqtt_port: Annotated[
        int, typer.Option(help="Port of the embedded MQTT broker (1883 is often taken).")
    ] = 1884,
    data_dir: Annotated[Path, typer.Option(help="Where the SQLite file lives.")] = Path("data"),
    simulate: Annotated[bool, typer.Option(help="Feed a simulated city.")] = True,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    broker: Annotated[
        EmbeddedMqtt,
        typer.Option(
            help="MQTT broker: `auto` runs Mosquitto when installed (MQTT 5), else amqtt "
            "(MQTT 3.1.1 only, slower); `mosquitto` or `amqtt` insist on one."
        ),
    ] = EmbeddedMqtt.auto,
) -> None:
    """Everything in one process: SQLite, an MQTT broker, the bridge, the worker, the API and a
    simulated city."""
    # lazy: the embedded broker (amqtt) and the whole service add ~1 s to `fabcity --help`
    from services.cli.embedded import BrokerUnavailable, Options, PortTaken, run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        run(Options(host, api_port, mqtt_port, data_dir, simulate, broker=broker.value), console)
    except (PortTaken, BrokerUnavailable) as exc:
        fail(exc, 2)


@app.command()
def api(
    role: Annotated[Role, typer.Option(help="Serve ingest, query, or both.")] = Role.both,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Addresses of the reverse proxies whose X-Forwarded-For is believed (a comma "
            "list, or '*' when only a proxy can reach this process). The client address counts "
            "failed key lookups; behind a proxy, without this, every client is the proxy. "
            "Default: uvicorn's (FORWARDED_ALLOW_IPS, else 127.0.0.1)."
        ),
    ] = None,
) -> None:
    """Serve the HTTP API."""
    # lazy: uvicorn (~30 ms of `fabcity --help`) serves this command alone
    import uvicorn

    _logging()
    uvicorn.run(
        f"services.cli.processes:_{role.value}_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        forwarded_allow_ips=forwarded_allow_ips,
    )


def _app_for(role: str) -> object:
    # lazy: the HTTP app (FastAPI, the database, every route) adds ~1 s to `fabcity --help`
    from services.http.app import create_app

    app = create_app(get_settings(), role)  # type: ignore[arg-type]
    gc_tuning.tune()  # in each uvicorn worker: this runs where the app is made
    return app


# The factories uvicorn imports by name, one per role.
def _both_app() -> object:
    return _app_for("both")


def _ingest_app() -> object:
    return _app_for("ingest")


def _query_app() -> object:
    return _app_for("query")


@app.command()
def bridge(
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Bridge processes in the one shared-subscription group, each its own client "
            "(client id + '-p{i}'). A process stores what one core can validate and write "
            "(docs/benchmarks.md), so one process per core is how one host goes faster.",
        ),
    ] = 1,
) -> None:
    """Run the MQTT bridge against the configured broker (FABCITY_MQTT_*)."""
    if processes > 1:
        _supervise_bridges(processes)
        return
    # lazy: the bridge pulls in the HTTP app's dispatcher and paho (~0.8 s of `--help`)
    from services.http.app import dispatcher_for
    from services.mqtt.bridge import Bridge

    _logging()
    settings = get_settings()
    _serve_metrics(settings.metrics_port)
    with database() as factory:
        b = Bridge(settings, factory, dispatcher_for(settings))
        gc_tuning.tune()
        # It follows the registry: device topics, and the printers it must go to (Bambu, each
        # its own broker; PrusaLink, over HTTP), registered before it started or since.
        b.start()
        _until_stopped().wait()
        b.stop()


def bridge_child_env(settings: Settings, i: int, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of `bridge --processes`' process i (from 1)."""
    env = {**environ, "FABCITY_MQTT_CLIENT_ID": f"{settings.mqtt_client_id}-p{i}"}
    if settings.mqtt_username:
        # A secured broker takes the user name as the client id: a user per process
        # (`fabcity broker-config --processes`), or they would push each other off.
        env["FABCITY_MQTT_USERNAME"] = f"{settings.mqtt_username}-p{i}"
    if i > 1:
        # Device adapters keep per-device state: one process reads their topics.
        env["FABCITY_BRIDGE_ADAPTERS"] = "false"
    if settings.metrics_port is not None:
        env["FABCITY_METRICS_PORT"] = str(settings.metrics_port + i)
    if settings.bridge_writers is None:
        # The processes share the cores: a second writer each would wait for its lock.
        env["FABCITY_BRIDGE_WRITERS"] = "1"
    return env


def _supervise_bridges(processes: int) -> None:
    """Run `processes` bridges as child processes; stop them all when stopped or one dies.

    Keep the count stable across restarts: each child's persistent session (its client id)
    holds the messages the broker gave it, and they are delivered when that id reconnects.
    """
    _logging()
    log = logging.getLogger("fabcity.bridge")
    settings = get_settings()
    children: list[subprocess.Popen[bytes]] = []
    for i in range(1, processes + 1):
        env = bridge_child_env(settings, i, os.environ)
        children.append(
            subprocess.Popen([sys.executable, "-m", "services.cli.main", "bridge"], env=env)
        )
    stop = _until_stopped()
    while not stop.wait(0.5):
        if any(child.poll() is not None for child in children):
            log.error("a bridge process exited; stopping the others")
            break
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        child.wait()


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
) -> None:
    """Run a Celery worker that recomputes dirty windows."""
    # Tasks run in prefork children: their counters meet in a shared directory, and the
    # main process serves the sum (prometheus_client's multiprocess mode).
    port = get_settings().metrics_port
    if port is not None:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fabcity-prom-"))
    # lazy: Celery (~0.4 s), and the tasks' counters must be made after the line above
    from workers.celery_app import app as celery

    _logging()
    if port is not None:
        # lazy: prometheus_client picks its value class on import, after the line above
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        _serve_metrics(port, registry)
    celery.worker_main(["worker", "--loglevel=INFO", f"--concurrency={concurrency}"])


BEAT_SCHEDULE = "celerybeat-schedule"


@app.command()
def beat(
    data_dir: Annotated[
        Path, typer.Option(help="Where beat keeps its schedule file (a directory of its own).")
    ] = Path("data"),
) -> None:
    """Run Celery beat: sweeps dirty windows every FABCITY_RECOMPUTE_INTERVAL_S."""
    # lazy: Celery and the tasks add ~0.4 s to `fabcity --help`
    from workers.celery_app import app as celery

    _logging()
    # The schedule is a shelve, pickles that beat loads at start. In the system's shared
    # temporary folder, under a fixed name, any local user could plant one first (code run as
    # this user) or a symbolic link that beat writes through: it lives in our data directory.
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    schedule = data_dir / BEAT_SCHEDULE
    celery.start(["beat", "--loglevel=INFO", f"--schedule={schedule}"])


@app.command()
def migrate() -> None:
    """Bring the database (FABCITY_DATABASE_URL) to the newest schema."""
    # lazy: Alembic and the database stack add ~0.4 s to `fabcity --help`
    from fabcity.migrations.upgrade import upgrade

    url = get_settings().database_url
    added = upgrade(url)
    console.print(f"database at the newest schema; {added} default resources added")


@app.command()
def simulate(
    api_url: Annotated[str, typer.Option("--api", help="Base URL of the API.")] = (
        "http://127.0.0.1:8000"
    ),
    mqtt_host: Annotated[str, typer.Option(help="The MQTT broker the machines publish to.")] = (
        "127.0.0.1"
    ),
    mqtt_port: Annotated[
        int, typer.Option(help="Its port (a full stack's broker: 1883; `fabcity up`'s: 1884).")
    ] = 1883,
    mqtt_protocol: Annotated[str, typer.Option(help="5 or 3.1.1")] = "5",
    interval: Annotated[float, typer.Option(help="Seconds between ticks.")] = 2.0,
    history_days: Annotated[int, typer.Option(help="Days of history to post first.")] = 14,
    ticks: Annotated[int | None, typer.Option(help="Stop after this many ticks.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="FABCITY_API_KEY", help="An admin key, when the API asks for keys."),
    ] = None,
) -> None:
    """Feed a simulated city into any running API and broker."""
    # lazy: httpx and paho (~40 ms of `fabcity --help`) serve this command alone
    from services.cli.simulate import Simulator

    _logging()
    sim = Simulator(api_url, mqtt_host, mqtt_port, mqtt_protocol=mqtt_protocol, api_key=api_key)
    sim.setup()
    sim.backfill(history_days)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        sim.run(interval, stop, ticks)
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
    console.print(f"published {sim.published} events over MQTT, posted {sim.posted} over HTTP")
