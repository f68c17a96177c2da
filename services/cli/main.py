"""The `fabcity` command."""

from __future__ import annotations

import logging
import signal
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from fabcity.core import gc_tuning
from fabcity.core.settings import get_settings

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
    from fabcity.core.logs import configure

    configure(get_settings().log_format)


def _serve_metrics(port: int | None, registry: object = None) -> None:
    if port is not None:
        from prometheus_client import REGISTRY, start_http_server

        start_http_server(port, addr="0.0.0.0", registry=registry or REGISTRY)  # type: ignore[arg-type]


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
    from services.cli.embedded import Options, PortTaken, run

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
        f"services.cli.main:_{role.value}_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


def _app_for(role: str) -> object:
    from services.http.app import create_app

    app = create_app(get_settings(), role)  # type: ignore[arg-type]
    gc_tuning.tune()  # in each uvicorn worker: this runs where the app is made
    return app


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
    from fabcity.core.db import make_engine, make_sessionmaker
    from services.http.app import dispatcher_for
    from services.mqtt.bridge import Bridge

    _logging()
    settings = get_settings()
    _serve_metrics(settings.metrics_port)
    factory = make_sessionmaker(make_engine(settings.database_url))
    b = Bridge(settings, factory, dispatcher_for(settings))
    gc_tuning.tune()
    b.start()
    # Printers the bridge must go to: Bambu (each its own broker) and PrusaLink (HTTP).
    from services.mqtt.links import start_links

    links = start_links(factory, b.dispatcher)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for link in links:
        link.stop()
    b.stop()


def _supervise_bridges(processes: int) -> None:
    """Run `processes` bridges as child processes; stop them all when stopped or one dies.

    Keep the count stable across restarts: each child's persistent session (its client id)
    holds the messages the broker gave it, and they are delivered when that id reconnects.
    """
    import os
    import subprocess
    import sys

    _logging()
    log = logging.getLogger("fabcity.bridge")
    settings = get_settings()
    children: list[subprocess.Popen[bytes]] = []
    for i in range(1, processes + 1):
        env = {**os.environ, "FABCITY_MQTT_CLIENT_ID": f"{settings.mqtt_client_id}-p{i}"}
        if i > 1:
            # Device adapters keep per-device state: one process reads their topics.
            env["FABCITY_BRIDGE_ADAPTERS"] = "false"
        if settings.metrics_port is not None:
            env["FABCITY_METRICS_PORT"] = str(settings.metrics_port + i)
        children.append(
            subprocess.Popen([sys.executable, "-m", "services.cli.main", "bridge"], env=env)
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
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
    import os
    import tempfile

    # Tasks run in prefork children: their counters meet in a shared directory, and the
    # main process serves the sum (prometheus_client's multiprocess mode).
    port = get_settings().metrics_port
    if port is not None:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fabcity-prom-"))
    from workers.celery_app import app as celery

    _logging()
    if port is not None:
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        _serve_metrics(port, registry)
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
    from fabcity.migrations.upgrade import upgrade

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
    api_key: Annotated[
        str | None,
        typer.Option(envvar="FABCITY_API_KEY", help="An admin key, when the API asks for keys."),
    ] = None,
) -> None:
    """Feed a simulated city into any running API and broker."""
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


import_app = typer.Typer(
    help="Import open-standard documents: sites from OKW, designs from OKH.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")

OKW_SUFFIXES = (".yml", ".yaml", ".json")
OKH_SUFFIXES = (".toml", ".yml", ".yaml", ".json")


def _documents(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """A file, or the files with these suffixes under a directory, in a stable order."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if path.is_file():
        return [path]
    err.print(f"[red]error:[/] {path} is neither a file nor a directory")
    raise typer.Exit(2)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    )


@import_app.command("okw")
def import_okw(
    path: Annotated[Path, typer.Argument(help="An OKW file (YAML or JSON) or a directory.")],
    city: Annotated[str, typer.Option(help="The city the sites belong to (its slug).")],
) -> None:
    """Sites from Open Know-Where facility records. A record imported before updates its site;
    each bad record is reported, the rest imported."""
    from fabcity.core.db import make_engine, make_sessionmaker, transaction
    from fabcity.core.errors import FabcityError, Invalid
    from fabcity.registry import entries, okw

    files = _documents(path, OKW_SUFFIXES)
    loaded: list[tuple[Path, list[object]]] = []
    problems: list[str] = []
    for file in files:
        try:
            media = "application/json" if file.suffix.lower() == ".json" else "application/yaml"
            loaded.append((file, okw.load_records(file.read_bytes(), media)))
        except Invalid as exc:
            problems.append(f"{file}: {exc.detail}")
    engine = make_engine(get_settings().database_url)
    created = updated = 0
    try:
        factory = make_sessionmaker(engine)
        try:
            with transaction(factory) as s:
                entries.get_city(s, city)
        except FabcityError as exc:
            err.print(f"[red]error:[/] {exc.detail}")
            raise typer.Exit(2) from None
        progress = _progress()
        with progress:
            task = progress.add_task("OKW records", total=sum(len(r) for _, r in loaded))
            for file, records in loaded:
                with transaction(factory) as s:
                    result = okw.import_records(s, entries.get_city(s, city), records)
                created += sum(1 for r in result.imported if r.created)
                updated += sum(1 for r in result.imported if not r.created)
                problems.extend(f"{file}#{r.index}: {r.error}" for r in result.rejected)
                progress.advance(task, len(records))
    finally:
        engine.dispose()
    _report(created, updated, problems, "sites")


@import_app.command("okh")
def import_okh(
    path: Annotated[Path, typer.Argument(help="An OKH manifest (TOML or YAML) or a directory.")],
    url: Annotated[
        str | None, typer.Option(help="The manifest's published URL (one file only).")
    ] = None,
    url_prefix: Annotated[
        str | None,
        typer.Option(
            help="Published URL of the directory: each manifest's URL is this plus its path "
            "below PATH. Without it, the manifest's own `manifest-url` is used."
        ),
    ] = None,
) -> None:
    """Designs from Open Know-How manifests (OKH v1 YAML, OKH-LOSH TOML). Flows name designs
    by their manifest URL; importing a URL again updates the design."""
    from fabcity.core.db import make_engine, make_sessionmaker, transaction
    from fabcity.registry import designs

    files = _documents(path, OKH_SUFFIXES)
    if url is not None and len(files) != 1:
        err.print("[red]error:[/] --url names one manifest; use --url-prefix for a directory")
        raise typer.Exit(2)
    base = path if path.is_dir() else path.parent
    engine = make_engine(get_settings().database_url)
    created = updated = 0
    problems: list[str] = []
    try:
        factory = make_sessionmaker(engine)
        progress = _progress()
        with progress:
            task = progress.add_task("OKH manifests", total=len(files))
            for file in files:
                where = url
                if url_prefix is not None:
                    where = url_prefix.rstrip("/") + "/" + file.relative_to(base).as_posix()
                with transaction(factory) as s:
                    result = designs.import_many(
                        s, [(file.suffix.lstrip("."), file.read_bytes(), where)]
                    )
                created += sum(1 for r in result.imported if r.created)
                updated += sum(1 for r in result.imported if not r.created)
                problems.extend(f"{file}: {r.error}" for r in result.rejected)
                progress.advance(task)
    finally:
        engine.dispose()
    _report(created, updated, problems, "designs")


def _report(created: int, updated: int, problems: list[str], what: str) -> None:
    console.print(f"{created} {what} created, {updated} updated, {len(problems)} refused")
    for line in problems:
        err.print(f"[yellow]refused:[/] {line}")
    if problems:
        raise typer.Exit(1)


metrics_app = typer.Typer(help="The city metrics: recompute them from what is stored.")
app.add_typer(metrics_app, name="metrics")


@metrics_app.command("rebuild")
def metrics_rebuild(
    city: Annotated[str | None, typer.Option(help="Only this city (slug).")] = None,
    from_events: Annotated[
        bool,
        typer.Option(
            "--from-events",
            help="Also derive every flow again from the stored events (pause ingest first).",
        ),
    ] = False,
) -> None:
    """Recompute every rollup from the stored flows (and, with --from-events, the flows from
    the stored events). Gives exactly what incremental processing gave."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn

    from fabcity.core.db import make_engine, make_sessionmaker, transaction
    from fabcity.ingest.rebuild import rebuild
    from fabcity.registry import entries

    engine = make_engine(get_settings().database_url)
    factory = make_sessionmaker(engine)
    try:
        city_id = None
        if city is not None:
            with transaction(factory) as s:
                city_id = entries.get_city(s, city).id
        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            tasks: dict[str, TaskID] = {}

            def advance(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done, total=total)

            report = rebuild(factory, city_id, from_events, advance)
    finally:
        engine.dispose()
    console.print(
        f"rebuilt {report.windows} windows"
        + (f" from {report.events} events ({report.flows} flows)" if from_events else "")
        + (f"; {report.skipped} events no longer derive" if report.skipped else "")
    )


devices_app = typer.Typer(help="Devices and the adapters that read what they publish.")
app.add_typer(devices_app, name="devices")

# The setting that says where each adapter finds its device, set by `--base-topic`.
_WHERE = {
    "octoprint": "base_topic",
    "moonraker": "instance_name",
    "bambu": "serial",
    "tasmota": "topic",
    "shelly": "topic_prefix",
    "esphome": "topic_prefix",
    "cloudevents": "topic",
    "prusalink": "url",
}


def _setting_value(text: str) -> object:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word is a string


@devices_app.command("add")
def devices_add(
    city: str,
    site: str,
    slug: str,
    adapter: Annotated[
        str, typer.Option(help="fabcity, " + ", ".join(_WHERE) + ", sparkplug.")
    ] = "fabcity",
    base_topic: Annotated[
        str | None,
        typer.Option(
            help="Where the device publishes: OctoPrint base topic, Moonraker instance name, "
            "Tasmota %topic%, Shelly/ESPHome topic prefix, CloudEvents topic, Bambu serial, "
            "PrusaLink URL."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Display name; the slug if absent.")] = None,
    kind: Annotated[str, typer.Option(help="printer, laser, cnc, meter, scale, ...")] = "printer",
    material: Annotated[str | None, typer.Option(help="Loaded material, e.g. PLA.")] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any adapter setting as KEY=VALUE (VALUE read as JSON when it parses), "
            "e.g. --set group_id=fablab --set access_code=12345678.",
        ),
    ] = None,
) -> None:
    """Register a device and the topic or address it sits behind."""
    from fabcity.core.db import make_engine, make_sessionmaker, transaction
    from fabcity.core.errors import FabcityError
    from fabcity.registry import entries
    from schemas import api as api_schemas

    settings: dict[str, object] = {}
    for item in setting or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"[red]error:[/] --set {item!r}: write KEY=VALUE")
            raise typer.Exit(2)
        settings[key] = _setting_value(value)
    if base_topic is not None:
        if adapter not in _WHERE:
            err.print(f"[red]error:[/] --base-topic does not apply to the {adapter} adapter")
            raise typer.Exit(2)
        settings[_WHERE[adapter]] = base_topic
    if material is not None:
        settings["material"] = material
    engine = make_engine(get_settings().database_url)
    try:
        with transaction(make_sessionmaker(engine)) as s:
            c = entries.get_city(s, city)
            st = entries.get_site(s, c, site)
            body = api_schemas.DeviceIn(
                slug=slug, name=name or slug, kind=kind, adapter=adapter, settings=settings
            )
            device = entries.create_device(s, st, body)
            stored = dict(device.settings)
    except FabcityError as exc:
        err.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(1) from None
    except ValueError as exc:  # the body itself (slug, name)
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    console.print(f"registered /{city}/{site}/{slug} ({adapter}) {stored}")


@devices_app.command("list")
def devices_list(
    city: Annotated[str | None, typer.Argument(help="Only this city's devices.")] = None,
) -> None:
    """Every device: adapter, settings, and whether it is online and when it was last seen."""
    from rich.table import Table

    from fabcity.core.db import make_engine, make_sessionmaker, transaction
    from fabcity.registry import entries

    engine = make_engine(get_settings().database_url)
    try:
        with transaction(make_sessionmaker(engine)) as s:
            rows = entries.all_devices(s, city)
    finally:
        engine.dispose()
    table = Table("device", "adapter", "settings", "online", "last seen")
    for c, st, d in rows:
        online = "—" if d.online is None else ("yes" if d.online else "no")
        seen = d.last_seen.isoformat(timespec="seconds") if d.last_seen else "—"
        table.add_row(f"/{c}/{st}/{d.slug}", d.adapter, str(d.settings), online, seen)
    console.print(table)


deadletters_app = typer.Typer(help="What could not become an event, kept with the reason.")
app.add_typer(deadletters_app, name="deadletters")


@deadletters_app.command("replay")
def deadletters_replay(
    id_: Annotated[
        list[int] | None, typer.Option("--id", help="A dead letter to replay (repeatable).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Run dead letters through the routing and the ingest path again (say, after their
    device was registered); those that now go through are deleted."""
    from fabcity.core.db import make_engine, make_sessionmaker, transaction
    from fabcity.ingest.deadletters import replay

    if not id_ and not all_:
        err.print("[red]error:[/] give --id N (repeatable) or --all")
        raise typer.Exit(2)
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as s:
            result = replay(
                s,
                None if all_ else list(id_ or []),
                settings.mqtt_topic_prefix,
                settings.mqtt_max_payload_bytes,
            )
    finally:
        engine.dispose()
    console.print(
        f"replayed: {result.ingested} went through ({result.events} new events), "
        f"{result.still_dead} still refused"
    )


@deadletters_app.command("list")
def deadletters_list(
    topic_prefix: Annotated[str | None, typer.Option(help="Only topics starting so.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only reasons containing this.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 100,
    after_id: Annotated[int, typer.Option(help="Start after this id (paging).")] = 0,
) -> None:
    """Dead letters, oldest first: when, where from, and why they were refused."""
    from rich.table import Table

    from fabcity.core.db import make_engine, make_sessionmaker, transaction
    from fabcity.ingest import deadletters
    from schemas.access import DeadLetterFilter

    wanted = DeadLetterFilter(topic_prefix=topic_prefix, reason_contains=reason)
    engine = make_engine(get_settings().database_url)
    try:
        with transaction(make_sessionmaker(engine)) as s:
            letters = deadletters.list_letters(s, wanted, limit, after_id)
    finally:
        engine.dispose()
    table = Table("id", "received", "topic", "bytes", "reason")
    for d in letters:
        when = d.received_at.isoformat(timespec="seconds")
        table.add_row(str(d.id), when, d.topic or "—", str(len(d.payload)), d.reason[:200])
    console.print(table)


@deadletters_app.command("show")
def deadletters_show(letter_id: int) -> None:
    """One dead letter: its reason, then its payload exactly as received, on stdout."""
    import sys

    from fabcity.core.db import make_engine, make_sessionmaker, transaction
    from fabcity.core.errors import FabcityError
    from fabcity.ingest import deadletters

    engine = make_engine(get_settings().database_url)
    try:
        with transaction(make_sessionmaker(engine)) as s:
            letter = deadletters.get(s, letter_id)
    except FabcityError as exc:
        err.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    err.print(f"dead letter {letter.id}, {letter.channel} {letter.topic or ''}")
    err.print(f"received {letter.received_at.isoformat()}; {len(letter.payload)} bytes")
    err.print(f"reason: {letter.reason}")
    sys.stdout.buffer.write(letter.payload + b"\n")


keys_app = typer.Typer(
    help="API keys (roles admin, site, device, planner): shown once, stored hashed.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


class KeyRole(StrEnum):
    admin = "admin"
    site = "site"
    device = "device"
    planner = "planner"


def _print_secret(issued: Any, what: str) -> None:
    """The key alone on stdout (`KEY=$(fabcity keys create ...)`); the rest on stderr."""
    key = issued.key
    scope = "/".join(x for x in (key.city, key.site, key.device) if x) or "everything"
    err.print(f"{what} key {key.id} ({key.role}, {scope}). It is shown this once; keep it:")
    if key.role == "device":
        err.print(f"MQTT user name: {key.lookup}, password: the key (run `fabcity broker-config`)")
    typer.echo(issued.secret)


def _keys_session() -> Any:
    from fabcity.core.db import make_engine, make_sessionmaker, transaction

    engine = make_engine(get_settings().database_url)
    return engine, transaction(make_sessionmaker(engine))


@keys_app.command("create")
def keys_create(
    role: Annotated[KeyRole, typer.Option(help="What the key may do.")],
    city: Annotated[
        str | None, typer.Option(help="site, device: required; planner: one city.")
    ] = None,
    site: Annotated[str | None, typer.Option(help="site and device keys.")] = None,
    device: Annotated[str | None, typer.Option(help="device keys.")] = None,
    name: Annotated[str | None, typer.Option(help="Who holds it, for you.")] = None,
) -> None:
    """Make a key and print it (only it) on stdout. `--role admin` makes the first admin key."""
    from fabcity.core.errors import FabcityError
    from fabcity.registry import keys

    engine, tx = _keys_session()
    try:
        with tx as s:
            issued = keys.create(s, role.value, city, site, device, name)
    except FabcityError as exc:
        err.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    _print_secret(issued, "new")


@keys_app.command("list")
def keys_list(
    revoked: Annotated[bool, typer.Option(help="Also list revoked keys.")] = False,
) -> None:
    """Every key: id, role, tenant, when made and revoked. Never the secrets."""
    from rich.table import Table

    from fabcity.registry import keys

    engine, tx = _keys_session()
    try:
        with tx as s:
            found = keys.list_keys(s, revoked)
    finally:
        engine.dispose()
    table = Table("id", "lookup", "role", "city", "site", "device", "name", "created", "revoked")
    for k in found:
        table.add_row(
            str(k.id), k.lookup, k.role, k.city or "—", k.site or "—", k.device or "—",
            k.name or "", k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )  # fmt: skip
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke a key. The API refuses it at once; the broker after `fabcity broker-config`."""
    from fabcity.core.errors import FabcityError
    from fabcity.registry import keys

    engine, tx = _keys_session()
    try:
        with tx as s:
            role = keys.revoke(s, key_id).role
    except FabcityError as exc:
        err.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    err.print(f"key {key_id} revoked")
    if role == "device":
        err.print("run `fabcity broker-config` so that the broker refuses it too")


@keys_app.command("rotate")
def keys_rotate(key_id: int) -> None:
    """A new key with the same role and tenant, printed on stdout; the old one is revoked."""
    from fabcity.core.errors import FabcityError
    from fabcity.registry import keys

    engine, tx = _keys_session()
    try:
        with tx as s:
            issued = keys.rotate(s, key_id)
    except FabcityError as exc:
        err.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    _print_secret(issued, f"key {key_id} revoked; its replacement is")


@app.command("broker-config")
def broker_config(
    out: Annotated[Path, typer.Option(help="Directory to write the files into.")],
    base: Annotated[
        Path | None,
        typer.Option(help="Broker configuration to start from [default: deploy/mosquitto/…]."),
    ] = None,
    files_at: Annotated[
        str | None,
        typer.Option(help="Where the broker will find the files [default: OUT, absolute]."),
    ] = None,
) -> None:
    """Write Mosquitto's access files: `passwords` (a user per live device key, and the bridge),
    `acl` (each device publishes only to its own topics; the bridge reads all),
    `mosquitto.conf` (BASE with anonymous access off) and `bridge.env` (the bridge's
    FABCITY_MQTT_USERNAME and _PASSWORD, kept across runs). Run it again after keys change,
    then reload the broker (SIGHUP)."""
    import os
    import secrets

    from fabcity.registry import broker_access
    from fabcity.registry.keys import mosquitto_hash

    settings = get_settings()
    base = base or Path("deploy/mosquitto/mosquitto.conf")
    base_text = base.read_text() if base.is_file() else "listener 1883\n"
    out.mkdir(parents=True, exist_ok=True)
    env_file = out / "bridge.env"
    password = None
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            if line.startswith("FABCITY_MQTT_PASSWORD="):
                password = line.partition("=")[2]
    password = password or secrets.token_urlsafe(32)
    engine, tx = _keys_session()
    try:
        with tx as s:
            users = broker_access.device_users(s)
    finally:
        engine.dispose()
    where = Path(files_at) if files_at else out.resolve()
    written = {
        "passwords": broker_access.password_file(
            users, broker_access.BRIDGE_USER, mosquitto_hash(password)
        ),
        "acl": broker_access.acl_file(users, broker_access.BRIDGE_USER, settings.mqtt_topic_prefix),
        "mosquitto.conf": broker_access.secure_conf(
            base_text, str(where / "passwords"), str(where / "acl")
        ),
        "bridge.env": f"FABCITY_MQTT_USERNAME={broker_access.BRIDGE_USER}\n"
        f"FABCITY_MQTT_PASSWORD={password}\n",
    }
    for name, text in written.items():
        path = out / name
        path.write_text(text)
        # The bridge's password is for the bridge only. The broker (its own user) must read the
        # rest; the hashes are of 256-bit random keys, which no one guesses back from a hash.
        os.chmod(path, 0o600 if name == "bridge.env" else 0o644)
    err.print(f"wrote {', '.join(written)} to {out}: {len(users)} device users and the bridge")


if __name__ == "__main__":
    app()
