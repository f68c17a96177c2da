"""design licence text: a design keeps its licence as the manifest wrote it, and its
openness may be unknown (null) when no licence is given or none maps to SPDX

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("designs") as batch:
        batch.add_column(sa.Column("licence_text", sa.String(length=500), nullable=True))
        batch.alter_column("is_open", existing_type=sa.Boolean(), nullable=True)
    # What was stored as the licence is what the manifest wrote; a design without one was
    # counted closed, and is unknown.
    op.execute("UPDATE designs SET licence_text = licence")
    op.execute("UPDATE designs SET is_open = NULL WHERE licence IS NULL")


def downgrade() -> None:
    op.execute("UPDATE designs SET is_open = false WHERE is_open IS NULL")
    with op.batch_alter_table("designs") as batch:
        batch.alter_column("is_open", existing_type=sa.Boolean(), nullable=False)
        batch.drop_column("licence_text")
