"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import Base, Resource
from fabcity.migrations import upgrade
from fabcity.registry.entries import DEFAULT_RESOURCES


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_upgrade_twice_seeds_the_registry_once(db_url: str) -> None:
    # The fixture already migrated and seeded once.
    assert upgrade.upgrade(db_url) == 0
    engine = make_engine(db_url)
    with transaction(make_sessionmaker(engine)) as s:
        assert s.scalar(select(func.count()).select_from(Resource)) == len(DEFAULT_RESOURCES)
        filament = s.get(Resource, "filament")
        assert filament is not None
        assert (filament.unit, filament.mfa_category) == ("kg", "MF4")
        assert s.get(Resource, "electricity").unit == "kWh"  # type: ignore[union-attr]
    engine.dispose()


def test_event_keys_compare_byte_by_byte_on_postgresql(pg_url: str) -> None:
    # Alembic's comparison above does not look at collations: this does (migration 0020).
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        found = dict(
            conn.execute(
                text(
                    "SELECT column_name, collation_name FROM information_schema.columns "
                    "WHERE table_name = 'events' AND column_name IN ('source', 'event_id')"
                )
            ).all()
        )
    engine.dispose()
    assert found == {"source": "C", "event_id": "C"}
