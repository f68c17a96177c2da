"""Bring a database to the newest schema and seed the default resources."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.registry.entries import seed_resources

MIGRATIONS = Path(__file__).parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> int:
    """Run every migration and seed the registry; returns how many resources were added."""
    # "heads": a feature may add a migration on a branch of its own until it is merged.
    command.upgrade(alembic_config(url), "heads")
    engine = make_engine(url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            return seed_resources(session)
    finally:
        engine.dispose()
