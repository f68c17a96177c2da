"""The few statements that differ between PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, TypeDecorator
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


def insert_replace(session: Session, model: Any, keys: list[str], columns: list[str]) -> Any:
    """`INSERT … ON CONFLICT (keys) DO UPDATE SET c = excluded.c` for each column."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model)
    return statement.on_conflict_do_update(
        index_elements=keys, set_={c: statement.excluded[c] for c in columns}
    )


class UtcDateTime(TypeDecorator[datetime]):
    """The one type of every stored time: an instant, written in UTC and read back aware, in
    UTC, on both databases. SQLite keeps no offset (SQLAlchemy's DATETIME drops it on the way
    in and reads back a naive time), so without this a time written as `…Z` came back without
    one; PostgreSQL answers in its session's zone, so the same row read there could carry
    another offset. A naive time handed in is taken as UTC, as SQLite would have stored it."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
