"""The few statements that differ between PostgreSQL and SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignore(session: Session, model: Any, keys: list[str]) -> Any:
    """`INSERT … ON CONFLICT (keys) DO NOTHING` in the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(index_elements=keys)
    return sqlite.insert(model).on_conflict_do_nothing(index_elements=keys)


def insert_add(session: Session, model: Any, keys: list[str], measures: list[str]) -> Any:
    """`INSERT … ON CONFLICT (keys) DO UPDATE SET m = m + excluded.m` for each measure."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model)
    table = model.__table__
    return statement.on_conflict_do_update(
        index_elements=keys,
        set_={m: table.c[m] + statement.excluded[m] for m in measures},
    )
