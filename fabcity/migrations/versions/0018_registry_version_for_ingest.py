"""the registry version also moves when what ingest reads of the registry changes: a city's
time zone, a device's kind, a site or city deleted, the resources; so that a writer may keep
its resolved sources and resources across batches while the version stands still

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BUMP = "UPDATE registry_version SET version = version + 1 WHERE id = 1"
# Migration 0014's triggers, as they were: replaced by wider ones here, restored on downgrade.
_OLD_DEVICE_COLUMNS = "site_id, slug, adapter, settings, retired_at"
_NEW_DEVICE_COLUMNS = "site_id, slug, kind, adapter, settings, retired_at"
_OLD_PG = {
    "devices_registry_version": f"AFTER INSERT OR DELETE OR UPDATE OF {_OLD_DEVICE_COLUMNS} "
    "ON devices",
    "sites_registry_version": "AFTER UPDATE OF retired_at ON sites",
    "cities_registry_version": "AFTER UPDATE OF retired_at ON cities",
}
_NEW_PG = {
    "devices_registry_version": f"AFTER INSERT OR DELETE OR UPDATE OF {_NEW_DEVICE_COLUMNS} "
    "ON devices",
    "sites_registry_version": "AFTER UPDATE OF retired_at OR DELETE ON sites",
    "cities_registry_version": "AFTER UPDATE OF retired_at, timezone OR DELETE ON cities",
    "resources_registry_version": "AFTER INSERT OR DELETE OR UPDATE ON resources",
}
_OLD_SQLITE = {
    "devices_changed_registry_version": f"AFTER UPDATE OF {_OLD_DEVICE_COLUMNS} ON devices",
    "cities_retired_registry_version": "AFTER UPDATE OF retired_at ON cities",
}
_NEW_SQLITE = {
    "devices_changed_registry_version": f"AFTER UPDATE OF {_NEW_DEVICE_COLUMNS} ON devices",
    "cities_retired_registry_version": "AFTER UPDATE OF retired_at, timezone ON cities",
    "sites_deleted_registry_version": "AFTER DELETE ON sites",
    "cities_deleted_registry_version": "AFTER DELETE ON cities",
    "resources_inserted_registry_version": "AFTER INSERT ON resources",
    "resources_deleted_registry_version": "AFTER DELETE ON resources",
    "resources_changed_registry_version": "AFTER UPDATE ON resources",
}


def _replace(drop: dict[str, str], create: dict[str, str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, when in drop.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {when.split()[-1]}")
        for name, when in create.items():
            # Once per statement, as in 0014.
            op.execute(
                f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT "
                "EXECUTE FUNCTION registry_version_bump()"
            )
    else:
        for name in drop:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        for name, when in create.items():  # SQLite's triggers are per row
            op.execute(f"CREATE TRIGGER {name} {when} BEGIN {_BUMP}; END")


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    _replace(_NEW_PG if pg else _NEW_SQLITE, _NEW_PG if pg else _NEW_SQLITE)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    _replace(_NEW_PG if pg else _NEW_SQLITE, _OLD_PG if pg else _OLD_SQLITE)
