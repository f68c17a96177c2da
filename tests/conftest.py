"""Shared fixtures: databases (SQLite and the real PostgreSQL), Redis and Mosquitto.

A test that needs a service the machine does not run is skipped with how to start it; in CI
(`CI=true`) it fails instead, since a skipped integration test proves nothing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.core.settings import Settings
from fabcity.migrations import upgrade

PG_ADMIN_URL = os.environ.get(
    "FABCITY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FABCITY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MQTT_HOST = os.environ.get("FABCITY_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("FABCITY_TEST_MQTT_PORT", "1883"))

HOW_TO_START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
    "Mosquitto": "mosquitto -d -c /etc/mosquitto/mosquitto.conf",
}
RUN_ID = uuid.uuid4().hex[:8]


def need(service: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        message = f"{service} is not reachable on {host}:{port}; start it: {HOW_TO_START[service]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def pg_server() -> str:
    need("PostgreSQL", "127.0.0.1", 5432)
    return PG_ADMIN_URL


def _create_pg_database(admin_url: str) -> tuple[str, Engine]:
    name = f"fabcity_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return admin_url.rsplit("/", 1)[0] + "/" + name, admin


def _drop_pg_database(url: str, admin: Engine) -> None:
    name = url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of its own."""
    url, admin = _create_pg_database(pg_server)
    upgrade.upgrade(url)
    try:
        yield url
    finally:
        _drop_pg_database(url, admin)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'fabcity.db'}"
    upgrade.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both databases the platform runs on, migrated and empty."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def pg_factory(pg_url: str) -> Iterator[sessionmaker[Session]]:
    """A PostgreSQL database with the test city registered (tests.support.city)."""
    from tests.support.city import register

    engine = make_engine(pg_url)
    factory = make_sessionmaker(engine)
    register(factory)
    yield factory
    engine.dispose()


@pytest.fixture
def redis_url() -> str:
    need("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def mosquitto() -> tuple[str, int]:
    need("Mosquitto", MQTT_HOST, MQTT_PORT)
    return MQTT_HOST, MQTT_PORT


def settings_for(db_url: str, **overrides: object) -> Settings:
    """Settings isolated to one test: its database, its topics, its Redis keys."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "database_url": db_url,
        "redis_url": REDIS_URL,
        "redis_prefix": f"fabcity-test-{tag}:",
        "mqtt_host": MQTT_HOST,
        "mqtt_port": MQTT_PORT,
        "mqtt_topic_prefix": f"fabcity-test-{tag}/v1",
        "mqtt_client_id": f"fabcity-test-bridge-{tag}",
        "mqtt_share_group": f"test{tag}",
        "recompute_interval_s": 0.5,
        # Keys are tested on their own (tests/services/http/test_access*.py); elsewhere every
        # caller is an admin, as in the embedded default.
        "auth": "off",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]
