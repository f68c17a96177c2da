"""events without foreign keys: ingest resolves sources itself; the checks cost half the
database's work per event

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = [
    ("fk_events_city_id_cities", "cities", "city_id"),
    ("fk_events_site_id_sites", "sites", "site_id"),
    ("fk_events_device_id_devices", "devices", "device_id"),
]


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for name, _, _ in KEYS:
            batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for name, table, column in KEYS:
            batch.create_foreign_key(name, table, [column], ["id"])
