"""Engine and sessions. Sessions are opened and committed at the edge, never inside services."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.errors import NotFound

T = TypeVar("T")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(conn: Any, _record: Any) -> None:
        # WAL lets the API read while the bridge and the worker write; writers queue on the
        # busy timeout instead of failing with "database is locked".
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def advisory_lock(session: Session, space: int, keys: Iterable[int], shared: bool) -> None:
    """Hold PostgreSQL's advisory locks (`space`, key) of `keys` until the transaction ends,
    taken in key order (writers that take several never wait for each other in a cycle),
    shared or exclusive; waits as long as it takes. Nothing on SQLite: one writer at a time."""
    ordered = sorted(set(keys))
    if ordered and is_postgres(session):
        mode = "_shared" if shared else ""
        session.connection().execute(
            text(
                f"SELECT pg_advisory_xact_lock{mode}(:space, k) "
                "FROM unnest(CAST(:keys AS integer[])) AS k ORDER BY k"
            ),
            {"space": space, "keys": ordered},
        )


def get_or_not_found(session: Session, model: type[T], pk: int, detail: str) -> T:
    """The row of `model` with id `pk`, or a NotFound that says `detail` (where to look)."""
    row = session.get(model, pk)
    if row is None:
        raise NotFound(detail)
    return row
