"""registry entries can be changed and retired; resources can be added: cities, sites and
devices get `retired_at` (retired, not deleted, once events refer to them), and
`registry_changes` keeps every change with who made it, before and after

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("cities", "sites", "devices"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "registry_changes",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("city_id", sa.Integer(), nullable=True),
        sa.Column("entry", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_changes")),
    )  # fmt: skip
    op.create_index("ix_registry_changes_city", "registry_changes", ["city_id", "id"])
    # A flow may carry a count and a mass together: the count is marked weighed.
    with op.batch_alter_table("flows") as batch:
        batch.add_column(
            sa.Column("weighed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    _device_listening_upgrade()  # last: its triggers name `retired_at`


def downgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        batch.drop_column("weighed")
    _device_listening_downgrade()  # first: its triggers name `retired_at`
    op.drop_index("ix_registry_changes_city", table_name="registry_changes")
    op.drop_table("registry_changes")
    for table in ("devices", "sites", "cities"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("retired_at")


# device listening (issue 17) -----------------------------------------------------------------
# `devices.listening_since`, written by the bridge; `registry_version`, one number that the
# database raises itself at every write that changes what the bridge listens to, whichever
# process or statement made it. The bridge reads it every half second (a primary-key read)
# instead of the whole registry. SQLite drops a table's triggers when a batch operation
# copies the table: a later migration that does so on `devices`, `sites` or `cities` must
# create them again (tests/services/mqtt/test_registry_watch.py fails otherwise).

# The columns of a device that change what the bridge listens to; `name`, `kind`, `online`,
# `last_seen` and `listening_since` do not (the bridge's own writes must not wake it).
_LISTENED_COLUMNS = "site_id, slug, adapter, settings, retired_at"
_BUMP = "UPDATE registry_version SET version = version + 1 WHERE id = 1"
_SQLITE_TRIGGERS = {
    "devices_inserted_registry_version": "AFTER INSERT ON devices",
    "devices_deleted_registry_version": "AFTER DELETE ON devices",
    "devices_changed_registry_version": f"AFTER UPDATE OF {_LISTENED_COLUMNS} ON devices",
    "sites_retired_registry_version": "AFTER UPDATE OF retired_at ON sites",
    "cities_retired_registry_version": "AFTER UPDATE OF retired_at ON cities",
}
_PG_TRIGGERS = {
    "devices_registry_version": f"AFTER INSERT OR DELETE OR UPDATE OF {_LISTENED_COLUMNS} "
    "ON devices",
    "sites_registry_version": "AFTER UPDATE OF retired_at ON sites",
    "cities_registry_version": "AFTER UPDATE OF retired_at ON cities",
}


def _device_listening_upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("listening_since", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_version")),
    )
    op.execute("INSERT INTO registry_version (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        # Once per statement: a statement that registers a thousand devices raises it once.
        op.execute(
            "CREATE FUNCTION registry_version_bump() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {_BUMP}; RETURN NULL; END $$"
        )
        for name, when in _PG_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT "
                "EXECUTE FUNCTION registry_version_bump()"
            )
    else:
        for name, when in _SQLITE_TRIGGERS.items():  # SQLite's triggers are per row
            op.execute(f"CREATE TRIGGER {name} {when} BEGIN {_BUMP}; END")


def _device_listening_downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, when in _PG_TRIGGERS.items():
            op.execute(f"DROP TRIGGER {name} ON {when.split()[-1]}")
        op.execute("DROP FUNCTION registry_version_bump()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("registry_version")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("listening_since")
