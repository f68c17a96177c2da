"""rollup changes: when each city-hour's rollups last changed, so that NGSI-LD's
`dateModified` is read from the rollups' side and never from the events on a request path

Filled here with each hour's latest receive time, which is when its figures last changed as
far as the stored events can tell; from now on the recompute writes it.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollup_changes",
        sa.Column("city_id", sa.Integer(), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("hour", sa.Integer(), primary_key=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        "INSERT INTO rollup_changes (city_id, day, hour, changed_at) "
        "SELECT city_id, day, hour, max(received_at) FROM events GROUP BY city_id, day, hour"
    )


def downgrade() -> None:
    op.drop_table("rollup_changes")
