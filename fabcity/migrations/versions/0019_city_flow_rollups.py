"""a city's flow rollups summed over its sites and devices (hour, day, month), for fast
series that do not break the city down by site or device

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DIMS = ["city_id", "day", "action", "resource", "ring", "fate", "recycled", "design", "state"]
_MEASURES = ["amount", "design_mass", "design_mass_flows", "flows"]
# (new table, the table it sums, whether it has an hour)
_TABLES = [
    ("rollup_city_flows_hour", "rollup_flows_hour", True),
    ("rollup_city_flows_day", "rollup_flows_day", False),
    ("rollup_city_flows_month", "rollup_flows_month", False),
]


def upgrade() -> None:
    for name, source, hourly in _TABLES:
        # An hour's key: the hour after the day (a city's hours are read by a range of days).
        keys = [*_DIMS[:2], "hour", *_DIMS[2:]] if hourly else _DIMS
        op.create_table(
            name,
            sa.Column("city_id", sa.Integer(), nullable=False),
            sa.Column("day", sa.Date(), nullable=False),
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
            *([sa.Column("hour", sa.Integer(), nullable=False)] if hourly else []),
            sa.PrimaryKeyConstraint(*keys, name=op.f(f"pk_{name}")),
        )
        # Existing cities: summed from the rollups they have (integers, exact).
        dims = ", ".join(keys)
        sums = ", ".join(f"sum({m})" for m in _MEASURES)
        op.execute(
            f"INSERT INTO {name} ({dims}, {', '.join(_MEASURES)}) "
            f"SELECT {dims}, {sums} FROM {source} GROUP BY {dims}"
        )


def downgrade() -> None:
    for name, _, _ in reversed(_TABLES):
        op.drop_table(name)
