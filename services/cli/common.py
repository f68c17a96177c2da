"""What every `fabcity` command shares: the printers, refusals, and the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console

from fabcity.core.errors import FabcityError
from fabcity.core.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

console = Console()
err = Console(stderr=True)


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

    engine = make_engine(get_settings().database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@contextmanager
def session() -> Iterator[Session]:
    """One transaction on the command's one engine: what most admin commands need."""
    # lazy: SQLAlchemy and the models add ~0.15 s to `fabcity --help`
    from fabcity.core.db import transaction

    with database() as factory, transaction(factory) as s:
        yield s
