"""What every `fabcity` command shares: the printers, refusals, and the database."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console

from fabcity.core.errors import FabcityError
from fabcity.core.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

console = Console()
err = Console(stderr=True)

# The registry's names as command arguments, said once.
CityArg = Annotated[str, typer.Argument(help="The city's slug (`fabcity cities list`).")]
SiteArg = Annotated[str, typer.Argument(help="The site's slug (`fabcity sites list CITY`).")]
DeviceArg = Annotated[str, typer.Argument(help="The device's slug (`fabcity devices list`).")]

# `--json` on every list command: the same objects the API answers, for scripts.
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON (as the API answers) instead of a table.")
]


def print_json(items: Sequence[BaseModel]) -> None:
    """A list of API models on stdout as JSON: no table, no colours."""
    import orjson

    sys.stdout.write(orjson.dumps([i.model_dump(mode="json") for i in items]).decode() + "\n")


def fail(message: object, code: int) -> NoReturn:
    """Refuse with one red line on stderr and exit `code`, never a traceback."""
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(code) from None


@contextmanager
def refused(code: int = 1) -> Iterator[None]:
    """What the domain refuses (no such city, key, letter...) becomes a `fail`."""
    try:
        yield
    except FabcityError as exc:
        fail(exc.detail, code)


@contextmanager
def database() -> Iterator[sessionmaker[Session]]:
    """One engine for the whole command, from FABCITY_DATABASE_URL, disposed of at the end."""
    # lazy: SQLAlchemy and the models add ~0.15 s to `fabcity --help`
    from fabcity.core.db import make_engine, make_sessionmaker

    url = get_settings().database_url
    _exists_or_fail(url)
    engine = make_engine(url)
    try:
        _schema_or_fail(engine, url)
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


# Where a command looks, said when it finds nothing there. Opening an SQLite file that is not
# there creates an empty one, and the command then failed with "no such table": a user who ran
# it outside the directory `fabcity up` ran in (the default is ./data/fabcity.db) saw only that.
def _exists_or_fail(url: str) -> None:
    from pathlib import Path

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        fail(
            f"FABCITY_DATABASE_URL={url!r} is not a database URL (e.g. sqlite:///data/fabcity.db)",
            2,
        )
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(str(parsed.database)).resolve()
    if not path.is_file():
        fail(
            f"no database at {path} (FABCITY_DATABASE_URL={url}). `fabcity up` keeps its "
            "database in data/ under the directory it ran in: run this command there, or set "
            "FABCITY_DATABASE_URL; `fabcity migrate` makes a new one",
            2,
        )


def _schema_or_fail(engine: object, url: str) -> None:
    from sqlalchemy import inspect
    from sqlalchemy.engine import Engine, make_url
    from sqlalchemy.exc import SQLAlchemyError

    assert isinstance(engine, Engine)
    where = make_url(url).render_as_string(hide_password=True)
    try:
        tables = set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        fail(f"cannot open the database at {where}: {str(cause).strip()[:300]}", 2)
    if "alembic_version" not in tables:
        fail(f"the database at {where} has no fabcity schema: run `fabcity migrate`", 2)


@contextmanager
def session() -> Iterator[Session]:
    """One transaction on the command's one engine: what most admin commands need."""
    # lazy: SQLAlchemy and the models add ~0.15 s to `fabcity --help`
    from fabcity.core.db import transaction

    with database() as factory, transaction(factory) as s:
        yield s
