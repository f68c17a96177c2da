"""The deployment files agree with each other and with the CLI.

docker-compose.yml, deploy/Dockerfile and deploy/mosquitto/mosquitto.conf are not exercised by
the rest of the suite, so a renamed subcommand or option, or a broker limit set back to its
default, would only show up when the stack is started. These tests catch that earlier.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import typer.main
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
PROXY_CONF = ROOT / "deploy" / "proxy" / "nginx.conf"

INFRA_SERVICES = ("postgres", "redis", "mosquitto", "entry")
APP_SERVICES = ("migrate", "broker-config", "ingest-api", "query-api", "bridge", "worker", "beat")
CLI_COMMANDS = ("api", "migrate", "bridge", "worker", "beat", "up", "simulate", "broker-config")

# Mosquitto's default of 1000 queued messages per client dropped 16-33 % of 200,000 QoS 1
# messages for a slow subscriber; 1,000,000 dropped none.
MIN_QUEUED_MESSAGES = 1_000_000


# A crash (SIGKILL) loses what the broker took since its last save: at most this many changes.
# The longest a message the broker acknowledged may wait to be saved (a SIGKILL loses it).
MAX_AUTOSAVE_SECONDS = 10


# --- helpers -------------------------------------------------------------------------------------


def interpolate(value: str, env: dict[str, str]) -> str:
    """What `docker compose config` makes of a value: `${NAME:-default}`, `${NAME}`, `$$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(3)
        return env.get(name) or (default or "")

    return re.sub(r"\$\$|\$\{(\w+)(:-([^}]*))?\}", one, value)


def published(service: dict[str, Any], env: dict[str, str]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of a service's short-syntax `ports`."""
    out = []
    for entry in service.get("ports", []):
        parts = interpolate(str(entry), env).split(":")
        if len(parts) == 2:  # "HOST:CONTAINER": every interface
            parts = ["0.0.0.0", *parts]
        assert len(parts) == 3, entry
        out.append((parts[0], parts[1], parts[2]))
    return out


def option_value(args: list[str], option: str) -> str:
    assert option in args, f"{option} missing from {args}"
    return args[args.index(option) + 1]


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def compose_services() -> dict[str, dict[str, Any]]:
    services = load_compose()["services"]
    assert isinstance(services, dict)
    return services


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends in a line continuation"
    return instructions


def exec_form(instruction: str) -> list[str]:
    """The JSON (exec) form of the last ENTRYPOINT or CMD in the Dockerfile."""
    found = [args for keyword, args in dockerfile_instructions() if keyword == instruction]
    assert found, f"Dockerfile has no {instruction}"
    value = json.loads(found[-1])
    assert isinstance(value, list)
    assert all(isinstance(item, str) for item in value)
    return value


def service_args(service: dict[str, Any]) -> list[str]:
    """Arguments given to the `fabcity` entrypoint: the service's command or the image's CMD."""
    command = service.get("command")
    if command is None:
        return exec_form("CMD")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list)
    return [str(item) for item in command]


def mosquitto_options() -> dict[str, list[str]]:
    """Option name -> values in file order. Mosquitto treats '#' as a comment at line start only."""
    options: dict[str, list[str]] = {}
    for raw in MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        options.setdefault(name, []).append(value.strip())
    return options


def cli_group() -> typer.core.TyperGroup:
    """The click group behind the Typer app.

    Typer 0.29 (the version in requirements.lock) ships its own copy of click, so the group, its
    context and its parse errors come from typer rather than from the click package.
    """
    from services.cli.main import app

    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup), "the fabcity CLI should have subcommands"
    return command


def check_cli_args(args: list[str]) -> None:
    """Fail unless `fabcity <args>` names a subcommand and its options parse."""
    assert args, "empty command"
    name, *rest = args
    group = cli_group()
    ctx = typer.Context(group)
    cmd = group.get_command(ctx, name)
    assert cmd is not None, f"fabcity has no subcommand {name!r}"
    try:
        cmd.make_context(name, list(rest))
    except Exception as exc:  # a usage error, whichever click implementation raised it
        pytest.fail(f"`fabcity {shlex.join(args)}` does not parse: {type(exc).__name__}: {exc}")


# --- docker-compose.yml --------------------------------------------------------------------------


def test_compose_has_no_obsolete_version_key() -> None:
    assert "version" not in load_compose()


def test_compose_defines_every_service() -> None:
    services = compose_services()
    for name in (*INFRA_SERVICES, *APP_SERVICES):
        assert name in services, f"docker-compose.yml lacks service {name!r}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_builds_the_one_image(name: str) -> None:
    service = compose_services()[name]
    build = service.get("build")
    assert isinstance(build, dict), f"{name} has no build section"
    assert build.get("context") == "."
    assert build.get("dockerfile") == "deploy/Dockerfile"
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert service.get("image") == "fabcity:latest"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_environment(name: str) -> None:
    environment = compose_services()[name].get("environment")
    assert isinstance(environment, dict)
    assert environment["FABCITY_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert environment["FABCITY_DATABASE_URL"].endswith("@postgres:5432/fabcity")
    assert environment["FABCITY_REDIS_URL"] == "redis://redis:6379/0"
    assert environment["FABCITY_MQTT_HOST"] == "mosquitto"
    assert str(environment["FABCITY_MQTT_PORT"]) == "1883"
    assert environment["FABCITY_WORKER_MODE"] == "celery"


def test_migrate_is_one_shot() -> None:
    migrate = compose_services()["migrate"]
    assert service_args(migrate) == ["migrate"]
    # Quoted in YAML: an unquoted `no` would load as False.
    assert migrate.get("restart") == "no"
    assert "ports" not in migrate
    assert "healthcheck" not in migrate
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", [name for name in APP_SERVICES if name != "migrate"])
def test_app_service_waits_for_migrations(name: str) -> None:
    depends_on = compose_services()[name].get("depends_on")
    assert isinstance(depends_on, dict)
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_healthy_dependencies_have_healthchecks() -> None:
    services = compose_services()
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on should name its conditions"
        for dependency, spec in depends_on.items():
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
                )


def test_one_entry_point_publishes_the_apis() -> None:
    """Planners, labs and the dashboard use one address; the APIs behind it publish nothing,
    so the forwarded client address they believe can only have come from the proxy."""
    services = compose_services()
    entry = services["entry"]
    assert [p[1:] for p in published(entry, {})] == [("8000", "8000")]
    mounts = [str(v).split(":") for v in entry["volumes"]]
    assert [m[1] for m in mounts if (ROOT / m[0]).resolve() == PROXY_CONF] == [
        "/etc/nginx/conf.d/default.conf"
    ]
    assert set(entry["depends_on"]) == {"ingest-api", "query-api"}
    for name in ("ingest-api", "query-api"):
        assert published(services[name], {}) == [], f"{name} is reachable around the proxy"
        assert option_value(service_args(services[name]), "--forwarded-allow-ips") == "*"
        test = services[name]["healthcheck"]["test"]
        assert "/healthz" in " ".join(test)


def proxy_locations() -> list[tuple[str, str, str]]:
    """(modifier, path, upstream) of each `location` in deploy/proxy/nginx.conf."""
    found = re.findall(
        r"location\s+(\^~|=)?\s*(\S+)\s*\{[^}]*proxy_pass\s+http://(\w+);", PROXY_CONF.read_text()
    )
    return [(m, path, upstream) for m, path, upstream in found]


def proxied_to(path: str) -> str:
    """Where nginx sends `path`: an exact match, else the longest matching prefix."""
    locations = proxy_locations()
    for modifier, prefix, upstream in locations:
        if modifier == "=" and path == prefix:
            return upstream
    prefixes = [(p, u) for m, p, u in locations if m != "=" and path.startswith(p)]
    assert prefixes, f"no location serves {path}"
    return max(prefixes, key=lambda pu: len(pu[0]))[1]


def role_routes(role: str) -> set[tuple[str, str]]:
    """(method, path) of every /v1 operation a role serves."""
    from fabcity.core.settings import Settings
    from services.http.app import create_app

    app = create_app(Settings(database_url="sqlite://"), role)  # type: ignore[arg-type]
    paths = app.openapi()["paths"]
    return {(m, p) for p, ops in paths.items() if p.startswith("/v1") for m in ops}


def test_the_proxy_sends_each_route_to_the_role_that_serves_it() -> None:
    """Every route of the ingest role reaches the ingest API and every other route the query
    API: a route moved between roles, or a new prefix, breaks this before it breaks a lab."""
    # Both roles serve the key routes (services/http/access.py); the proxy may pick either.
    # Routes go by path alone, so each operation must be served where its path is sent.
    ingest, query = role_routes("ingest") - role_routes("query"), role_routes("query")
    assert ingest and query
    for method, path in ingest:
        assert proxied_to(path) == "ingest", (method, path)
    for method, path in query:
        assert proxied_to(path) == "query", (method, path)
    for path in ("/", "/docs", "/healthz", "/static/app.js", "/metrics"):
        assert proxied_to(path) == "query", path
    text = PROXY_CONF.read_text()
    assert {u for _, _, u in proxy_locations()} == set(re.findall(r"upstream (\w+)", text))
    servers = dict(re.findall(r"upstream (\w+) \{\s*server ([\w-]+):8000;", text))
    assert servers == {"ingest": "ingest-api", "query": "query-api"}
    # A client cannot choose the address its failed key lookups are counted against.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
    assert "$proxy_add_x_forwarded_for" not in text


def test_ports_are_on_loopback_unless_asked_otherwise() -> None:
    """An open broker or API on every interface is one `docker compose up` away from the
    network; the operator opens them by setting FABCITY_BIND."""
    services = compose_services()
    ports = [(n, p) for n, service in services.items() for p in published(service, {})]
    assert {n for n, _ in ports} >= {"mosquitto", "entry"}
    for name, (host, _, _) in ports:
        assert host == "127.0.0.1", f"{name} publishes a port on {host}"
    for name, service in services.items():
        for host, _, _ in published(service, {"FABCITY_BIND": "192.0.2.7"}):
            assert host == "192.0.2.7", f"{name} ignores FABCITY_BIND"
    assert ("127.0.0.1", "1883", "1883") in published(services["mosquitto"], {})


def test_mosquitto_runs_the_configuration_broker_config_writes() -> None:
    services = compose_services()
    mosquitto, writer = services["mosquitto"], services["broker-config"]
    args = service_args(writer)
    assert args[0] == "broker-config"
    out = option_value(args, "--out")
    # The shipped file is broker-config's base; the broker runs what broker-config made of it.
    base_mounts = [str(v).split(":") for v in writer["volumes"]]
    base = option_value(args, "--base")
    assert [m[0] for m in base_mounts if m[1] == base] == ["./deploy/mosquitto/mosquitto.conf"]
    assert (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").resolve() == MOSQUITTO_CONF
    assert mosquitto["command"][-2:] == ["-c", f"{out}/mosquitto.conf"]
    # One volume, written by broker-config, read by the broker.
    volume = [m[0] for m in base_mounts if m[1] == out]
    assert len(volume) == 1
    assert f"{volume[0]}:{out}:ro" in mosquitto["volumes"]
    assert volume[0] in load_compose()["volumes"]
    assert mosquitto["depends_on"]["broker-config"]["condition"] == (
        "service_completed_successfully"
    )
    # The eclipse-mosquitto image's plugin.
    assert mosquitto["image"].startswith("eclipse-mosquitto:2")
    assert option_value(args, "--plugin") == "/usr/lib/mosquitto_dynamic_security.so"


def test_mosquitto_healthcheck_logs_in() -> None:
    from fabcity.registry.broker_access import HEALTH_TOPIC, HEALTH_USER
    from services.cli.broker import HEALTH_PASSWORD_FILE

    services = compose_services()
    out = option_value(service_args(services["broker-config"]), "--out")
    test = services["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = shlex.split(interpolate(test[1], {}))
    assert command[0] == "mosquitto_sub"
    assert option_value(command, "-u") == HEALTH_USER
    assert option_value(command, "-P") == f"$(cat {out}/{HEALTH_PASSWORD_FILE})"
    assert option_value(command, "-t") == HEALTH_TOPIC


def test_bridge_logs_in_with_what_broker_config_wrote() -> None:
    services = compose_services()
    out = option_value(service_args(services["broker-config"]), "--out")
    bridge = services["bridge"]
    assert bridge["environment"]["FABCITY_SECRETS_DIR"] == f"{out}/bridge-1"
    assert any(str(v).split(":")[1] == out for v in bridge["volumes"])
    # Credentials come from files, never from the compose file.
    for name, service in services.items():
        environment = service.get("environment") or {}
        assert "FABCITY_MQTT_PASSWORD" not in environment, name


def test_no_service_admits_anonymous_mqtt() -> None:
    assert "allow_anonymous true" not in COMPOSE_FILE.read_text(encoding="utf-8")
    assert mosquitto_options()["allow_anonymous"] == ["false"]


# --- CLI commands used by the deployment ---------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_command_is_a_cli_command(name: str) -> None:
    check_cli_args(service_args(compose_services()[name]))


def test_dockerfile_default_command_is_a_cli_command() -> None:
    check_cli_args(exec_form("CMD"))


@pytest.mark.parametrize("name", CLI_COMMANDS)
def test_cli_has_command(name: str) -> None:
    group = cli_group()
    assert group.get_command(typer.Context(group), name) is not None


@pytest.mark.parametrize("role", ["ingest", "query", "both"])
def test_cli_api_accepts_role(role: str) -> None:
    check_cli_args(["api", "--role", role, "--host", "0.0.0.0", "--port", "8000"])


# --- deploy/Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_entrypoint_is_the_cli() -> None:
    assert exec_form("ENTRYPOINT") == ["fabcity"]


def test_dockerfile_installs_the_lock_before_the_source() -> None:
    instructions = dockerfile_instructions()
    copy_lock = next(
        (
            index
            for index, (keyword, args) in enumerate(instructions)
            if keyword == "COPY" and "requirements.lock" in args.split()
        ),
        None,
    )
    assert copy_lock is not None, "Dockerfile does not copy requirements.lock"
    install_lock = next(
        index
        for index, (keyword, args) in enumerate(instructions)
        if keyword == "RUN" and "-r requirements.lock" in args
    )
    copy_source = next(
        index
        for index, (keyword, args) in enumerate(instructions)
        if keyword == "COPY" and "fabcity/" in args.split()
    )
    assert copy_lock < install_lock < copy_source


def test_dockerfile_runs_unprivileged() -> None:
    users = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    assert users, "Dockerfile has no USER"
    assert users[-1] not in {"root", "0"}


# --- deploy/mosquitto/mosquitto.conf -------------------------------------------------------------


def test_mosquitto_does_not_drop_queued_qos1_messages() -> None:
    options = mosquitto_options()
    assert len(options.get("max_queued_messages", [])) == 1
    queued = int(options["max_queued_messages"][0])
    assert queued == 0 or queued >= MIN_QUEUED_MESSAGES
    # A byte limit would drop messages just the same; 0 means none.
    assert options.get("max_queued_bytes", ["0"]) == ["0"]


def test_mosquitto_listens_and_persists() -> None:
    options = mosquitto_options()
    assert options["listener"] == ["1883"]
    assert options["persistence"] == ["true"]
    assert options["persistence_location"] == ["/mosquitto/data/"]
    assert options["max_packet_size"] == ["1048576"]


def test_mosquitto_bounds_what_a_crash_loses() -> None:
    """Mosquitto saves its database only at autosave (every 1800 s by default): a SIGKILL lost
    everything queued since. tests/security/test_broker.py proves the bound on a real broker."""
    options = mosquitto_options()
    assert options.get("autosave_on_changes", ["false"]) == ["false"]
    assert 0 < int(options["autosave_interval"][0]) <= MAX_AUTOSAVE_SECONDS
