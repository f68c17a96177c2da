"""events' source and id compared byte by byte (collation "C") on PostgreSQL

Every stored event is a search of the unique index on (source, event_id). Under the
database's collation (C.UTF-8 here, which PostgreSQL 15 does not treat as "C") each comparison
of two ids goes through strcoll; under "C" it is a memcmp. Equality is bytewise under either,
so which events are one event does not change, and C.UTF-8 orders by code point, as "C" does
(UTF-8's byte order), so neither does any order by them. SQLite compares bytes already.
Measured on a 1M-row index: 0.22 us less of PostgreSQL's CPU per stored event with short ids,
0.29 with UUIDs (COPY of 1,000-row batches, 300 of each, alternated).

Changing a column's collation does not rewrite the table, but it rebuilds the index on
(source, event_id), under a lock that stops ingest while it is built.

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # One statement: the index is rebuilt once for both columns.
    op.execute(
        "ALTER TABLE events "
        f"ALTER COLUMN source TYPE varchar(512) COLLATE {collation}, "
        f"ALTER COLUMN event_id TYPE varchar(256) COLLATE {collation}"
    )


def upgrade() -> None:
    _collate('"C"')


def downgrade() -> None:
    _collate('pg_catalog."default"')
