"""dead letter properties and replays: a dead letter keeps the MQTT 5 user properties and
content type it came with (a binary-mode CloudEvent lives in them), and each replay's outcome
apart from the reason it was refused

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("properties", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("content_type", sa.Text(), nullable=True))
        batch.add_column(sa.Column("replays", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("last_replay_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_replay_outcome", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("last_replay_outcome")
        batch.drop_column("last_replay_at")
        batch.drop_column("replays")
        batch.drop_column("content_type")
        batch.drop_column("properties")
