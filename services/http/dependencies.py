"""What the HTTP apps share: the session factory and the worker dispatcher, set at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Path, Request
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.settings import Settings
from fabcity.registry.keys import ADMIN, Principal
from workers.dispatch import Dispatcher


@dataclass
class Context:
    settings: Settings
    factory: sessionmaker[Session]
    dispatcher: Dispatcher


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def principal(request: Request) -> Principal:
    """The caller, as services.http.auth found it (an admin when auth is off)."""
    found: Principal = getattr(request.state, "principal", ADMIN)
    return found


# Row ids are 64-bit in PostgreSQL and SQLite: a larger number names nothing (a 404 problem,
# not an overflow deep in the database driver).
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A row id.")]
