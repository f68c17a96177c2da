"""corrections and retractions of events: which event corrects which, in what order, and why
(the events themselves stay as they came)

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "corrections",
        sa.Column("event_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("city_id", sa.Integer(), nullable=False),
        sa.Column("target_pk", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("event_pk", name=op.f("pk_corrections")),
        sa.UniqueConstraint("target_pk", "rank", name=op.f("uq_corrections_target_pk")),
    )
    op.create_index("ix_corrections_city", "corrections", ["city_id"])


def downgrade() -> None:
    op.drop_index("ix_corrections_city", table_name="corrections")
    op.drop_table("corrections")
