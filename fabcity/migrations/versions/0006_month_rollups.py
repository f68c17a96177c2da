"""month flow rollups and daily site activity, for fast reads of long periods

Revision ID: 0006
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0006"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CUBE_KEYS = ["city_id", "day", "site_id", "device_id", "action", "resource", "ring", "fate",
             "recycled", "design", "state"]


def upgrade() -> None:
    op.create_table(
        "rollup_flows_month",
        sa.Column("city_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("resource", sa.String(length=100), nullable=False),
        sa.Column("ring", sa.String(length=8), nullable=False),
        sa.Column("fate", sa.String(length=16), nullable=False),
        sa.Column("recycled", sa.Boolean(), nullable=False),
        sa.Column("design", sa.String(length=12), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("design_mass", sa.BigInteger(), nullable=False),
        sa.Column("design_mass_flows", sa.Integer(), nullable=False),
        sa.Column("flows", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*CUBE_KEYS, name=op.f("pk_rollup_flows_month")),
    )
    op.create_table(
        "rollup_sites_day",
        sa.Column("city_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("city_id", "day", "site_id", name=op.f("pk_rollup_sites_day")),
    )
    # Existing cities: fill both from the rollups they have (sums of integers, exact).
    op.execute(
        "INSERT INTO rollup_sites_day (city_id, day, site_id, events) "
        "SELECT city_id, day, site_id, sum(events) FROM rollup_sites_hour "
        "GROUP BY city_id, day, site_id"
    )
    month = (
        "date_trunc('month', day)::date"
        if op.get_bind().dialect.name == "postgresql"
        else "date(day, 'start of month')"
    )
    dims = ", ".join(k if k != "day" else month for k in CUBE_KEYS)
    op.execute(
        f"INSERT INTO rollup_flows_month ({', '.join(CUBE_KEYS)}, amount, design_mass, "
        f"design_mass_flows, flows) SELECT {dims}, sum(amount), sum(design_mass), "
        f"sum(design_mass_flows), sum(flows) FROM rollup_flows_day GROUP BY {dims}"
    )


def downgrade() -> None:
    op.drop_table("rollup_sites_day")
    op.drop_table("rollup_flows_month")
