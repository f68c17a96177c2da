"""dead letter digests: a dead letter keeps a bounded prefix of its payload, with the whole
payload's size and SHA-256 (indexed, so a message refused again is recognised)

Revision ID: 0010
Revises: 0009
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows read at a time when SQLite's digests are computed here (it has no SHA-256 of its own).
BACKFILL_ROWS = 100


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("payload_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("payload_sha256", sa.String(length=64), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # In the database: rows already there are never sent over the wire.
        op.execute(
            "UPDATE dead_letters SET payload_size = octet_length(payload), "
            "payload_sha256 = encode(sha256(payload), 'hex')"
        )
    else:
        letters = sa.table(
            "dead_letters",
            sa.column("id", sa.Integer()),
            sa.column("payload", sa.LargeBinary()),
            sa.column("payload_size", sa.BigInteger()),
            sa.column("payload_sha256", sa.String()),
        )
        last = -1
        while True:
            rows = bind.execute(
                sa.select(letters.c.id, letters.c.payload)
                .where(letters.c.id > last)
                .order_by(letters.c.id)
                .limit(BACKFILL_ROWS)
            ).all()
            if not rows:
                break
            for letter_id, payload in rows:
                bind.execute(
                    letters.update()
                    .where(letters.c.id == letter_id)
                    .values(
                        payload_size=len(payload),
                        payload_sha256=hashlib.sha256(payload).hexdigest(),
                    )
                )
            last = rows[-1][0]
    # Rows already there keep their payloads whole: they were stored so, and stay replayable.
    with op.batch_alter_table("dead_letters") as batch:
        batch.alter_column("payload_size", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("payload_sha256", existing_type=sa.String(length=64), nullable=False)
        batch.create_index(
            batch.f("ix_dead_letters_payload_sha256"), ["payload_sha256"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_index(batch.f("ix_dead_letters_payload_sha256"))
        batch.drop_column("payload_sha256")
        batch.drop_column("payload_size")
