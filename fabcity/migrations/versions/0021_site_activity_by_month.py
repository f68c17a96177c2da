"""events per site and month, for the coverage of long periods by month or year

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollup_sites_month",
        sa.Column("city_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("city_id", "day", "site_id", name=op.f("pk_rollup_sites_month")),
    )
    # Existing cities: summed from the days they have (integers, exact).
    month = (
        "date_trunc('month', day)::date"
        if op.get_bind().dialect.name == "postgresql"
        else "date(day, 'start of month')"
    )
    op.execute(
        "INSERT INTO rollup_sites_month (city_id, day, site_id, events) "
        f"SELECT city_id, {month}, site_id, sum(events) FROM rollup_sites_day "
        f"GROUP BY city_id, {month}, site_id"
    )


def downgrade() -> None:
    op.drop_table("rollup_sites_month")
