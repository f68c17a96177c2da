"""The `fabcity` command."""

from __future__ import annotations

import logging
import signal
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fabcity.settings import get_settings

app = typer.Typer(
    help="fabcity: how far a city is from being a Fab City.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


class Role(StrEnum):
    both = "both"
    ingest = "ingest"
    query = "query"


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("amqtt", "transitions", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def up(
    api_port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 8000,
    mqtt_port: Annotated[int, typer.Option(help="Port of the embedded MQTT broker.")] = 1883,
    data_dir: Annotated[Path, typer.Option(help="Where the SQLite file lives.")] = Path("data"),
    simulate: Annotated[bool, typer.Option(help="Feed a simulated city.")] = True,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Everything in one process: SQLite, an MQTT broker, the bridge, the worker, the API and a
    simulated city."""
    from services.embedded import Options, PortTaken, run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        run(Options(host, api_port, mqtt_port, data_dir, simulate), console)
    except PortTaken as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
def api(
    role: Annotated[Role, typer.Option(help="Serve ingest, query, or both.")] = Role.both,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    _logging()
    uvicorn.run(
        f"services.cli:_{role.value}_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


def _app_for(role: str) -> object:
    from services.api import create_app

    return create_app(get_settings(), role)  # type: ignore[arg-type]


def _both_app() -> object:
    return _app_for("both")


def _ingest_app() -> object:
    return _app_for("ingest")


def _query_app() -> object:
    return _app_for("query")


@app.command()
def bridge() -> None:
    """Run the MQTT bridge against the configured broker (FABCITY_MQTT_*)."""
    from fabcity.db import make_engine, make_sessionmaker
    from services.api import dispatcher_for
    from services.bridge import Bridge

    _logging()
    settings = get_settings()
    factory = make_sessionmaker(make_engine(settings.database_url))
    b = Bridge(settings, factory, dispatcher_for(settings)).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    b.stop()


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
) -> None:
    """Run a Celery worker that recomputes dirty windows."""
    from workers.celery_app import app as celery

    _logging()
    celery.worker_main(["worker", "--loglevel=INFO", f"--concurrency={concurrency}"])


@app.command()
def beat() -> None:
    """Run Celery beat: sweeps dirty windows every FABCITY_RECOMPUTE_INTERVAL_S."""
    from workers.celery_app import app as celery

    _logging()
    celery.start(["beat", "--loglevel=INFO", "--schedule=/tmp/fabcity-beat-schedule"])


@app.command()
def migrate() -> None:
    """Bring the database (FABCITY_DATABASE_URL) to the newest schema."""
    from fabcity.migrate import upgrade

    url = get_settings().database_url
    added = upgrade(url)
    console.print(f"database at the newest schema; {added} default resources added")


@app.command()
def simulate(
    api_url: Annotated[str, typer.Option("--api", help="Base URL of the API.")] = (
        "http://127.0.0.1:8000"
    ),
    mqtt_host: Annotated[str, typer.Option()] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option()] = 1883,
    mqtt_protocol: Annotated[str, typer.Option(help="5 or 3.1.1")] = "5",
    interval: Annotated[float, typer.Option(help="Seconds between ticks.")] = 2.0,
    history_days: Annotated[int, typer.Option(help="Days of history to post first.")] = 14,
    ticks: Annotated[int | None, typer.Option(help="Stop after this many ticks.")] = None,
) -> None:
    """Feed a simulated city into any running API and broker."""
    from services.simulate import Simulator

    _logging()
    sim = Simulator(api_url, mqtt_host, mqtt_port, mqtt_protocol=mqtt_protocol)
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


if __name__ == "__main__":
    app()
