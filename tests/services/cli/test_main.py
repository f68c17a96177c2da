"""The `fabcity` command as a whole: a version, help for every argument, and a clear word on
where it looks for the database when there is none (instead of creating an empty one and
failing with "no such table")."""

from __future__ import annotations

import os
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import typer.main

from services.cli.main import app
from tests.services.cli.runner import assert_refused, fabcity
from tests.support.procs import FABCITY


def commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if hasattr(command, "commands"):
        return [c for name, sub in command.commands.items() for c in commands(sub, (*path, name))]
    return [(path, command)]


def test_every_command_and_argument_says_what_it_is() -> None:
    missing = []
    for path, command in commands(typer.main.get_command(app)):
        if not (command.help or "").strip():
            missing.append(" ".join(path))
        missing += [
            f"{' '.join(path)} {p.name}"
            for p in command.params
            if p.name != "help" and not (getattr(p, "help", None) or "").strip()
        ]
    assert not missing, f"give these help text: {missing}"


def test_version() -> None:
    done = subprocess.run([FABCITY, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"fabcity {version('fabcity')}"


def run_in(directory: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FABCITY_DATABASE_URL"}
    if url is not None:
        env["FABCITY_DATABASE_URL"] = url
    return subprocess.run(
        [FABCITY, *args], cwd=directory, env={**env, "COLUMNS": "200"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_outside_the_checkout_a_command_says_where_it_looked(tmp_path: Path) -> None:
    done = run_in(tmp_path, "keys", "list")
    assert_refused(done, 2, f"no database at {tmp_path.resolve()}/data/fabcity.db")
    assert "fabcity up" in done.stderr.replace("\n", " ")
    assert not (tmp_path / "data").exists(), "an empty database was created"


def test_an_empty_database_asks_for_migrate(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    done = run_in(tmp_path, "deadletters", "list", url=f"sqlite:///{tmp_path}/empty.db")
    assert_refused(done, 2, "run `fabcity migrate`")


def test_an_unreachable_or_malformed_database_url_is_one_line(tmp_path: Path) -> None:
    assert_refused(run_in(tmp_path, "keys", "list", url=""), 2, "is not a database URL")
    # A port nothing listens on: the connection is refused at once.
    done = run_in(tmp_path, "keys", "list", url="postgresql+psycopg://x@127.0.0.1:9/none")
    assert_refused(done, 2, "cannot open the database at postgresql+psycopg://x@127.0.0.1:9/none")


def test_a_migrated_database_is_used(sqlite_url: str) -> None:
    done = fabcity(sqlite_url, "keys", "list")
    assert done.returncode == 0, done.stderr


def test_every_list_command_speaks_json() -> None:
    lists = [p for p, c in commands(typer.main.get_command(app)) if p[-1] == "list"]
    assert len(lists) >= 3
    for path, command in commands(typer.main.get_command(app)):
        if path[-1] == "list":
            flags = {o for p in command.params for o in getattr(p, "opts", [])}
            assert "--json" in flags, f"fabcity {' '.join(path)} has no --json"


def test_keys_and_dead_letters_as_json_are_what_the_api_answers(sqlite_url: str) -> None:
    import json

    made = fabcity(sqlite_url, "keys", "create", "--role", "admin", "--name", "ops")
    assert made.returncode == 0, made.stderr
    listed = json.loads(fabcity(sqlite_url, "keys", "list", "--json").stdout)
    assert [(k["role"], k["name"]) for k in listed] == [("admin", "ops")]
    assert "secret" not in listed[0] and listed[0]["created_at"].endswith(("Z", "+00:00"))
    assert json.loads(fabcity(sqlite_url, "deadletters", "list", "--json").stdout) == []


def test_cities_sites_devices_and_resources_list_as_json(sqlite_url: str) -> None:
    import json

    from fabcity.core.db import make_engine, make_sessionmaker
    from tests.support.city import CITY, DEVICE, SITE, register

    engine = make_engine(sqlite_url)
    register(make_sessionmaker(engine))
    engine.dispose()
    cities = json.loads(fabcity(sqlite_url, "cities", "list", "--json").stdout)
    assert [(c["slug"], c["timezone"]) for c in cities] == [(CITY, "Europe/Madrid")]
    sites = json.loads(fabcity(sqlite_url, "sites", "list", CITY, "--json").stdout)
    assert sorted(s["slug"] for s in sites) == ["hub", SITE]
    devices = json.loads(fabcity(sqlite_url, "devices", "list", "--json").stdout)
    assert [(d["city"], d["site"], d["slug"]) for d in devices] == [(CITY, SITE, DEVICE)]
    resources = json.loads(fabcity(sqlite_url, "resources", "list", "--json").stdout)
    assert {"filament", "wood", "part"} <= {r["name"] for r in resources}
    assert_refused(fabcity(sqlite_url, "sites", "list", "atlantis"), 1, "atlantis")
