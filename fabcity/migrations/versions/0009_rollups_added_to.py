"""rollups added to: pending marks name each batch's new rows by id ranges, and ids come in
blocks so that a range holds one batch's rows only

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fabcity.ingest.ID_BLOCK, repeated: a migration must not change when the code does.
ID_BLOCK = 65536


def upgrade() -> None:
    op.create_table(
        "rollup_pending",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("city_id", sa.Integer(), nullable=False),
        sa.Column("event_lo", sa.BigInteger(), nullable=False),
        sa.Column("event_hi", sa.BigInteger(), nullable=False),
        sa.Column("flow_lo", sa.BigInteger(), nullable=True),
        sa.Column("flow_hi", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollup_pending")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Each nextval is the first id of a block no other writer can be given.
        for sequence in ("events_id_seq", "flows_id_seq"):
            op.execute(f"ALTER SEQUENCE {sequence} INCREMENT BY {ID_BLOCK}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for sequence in ("events_id_seq", "flows_id_seq"):
            op.execute(f"ALTER SEQUENCE {sequence} INCREMENT BY 1")
    op.drop_table("rollup_pending")
