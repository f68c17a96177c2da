"""Fuzzing on the real PostgreSQL, where the embedded default's SQLite forgives what psycopg does
not (NUL bytes in text, integers past a bigint, strings past a column's length).

- Every HTTP operation of the OpenAPI document, with an admin key and with a planner key of
  another city: no input gives a server error, and every answer is what the document says.
- The bridge's writer path with malformed MQTT messages: each is stored, a duplicate, or
  dead-lettered with a reason; nothing escapes.

`FABCITY_SCHEMATHESIS_EXAMPLES_PG` cases per operation (20 by default; the SQLite run in
tests/services/http covers more cases per operation, this one the database's edges).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.migrations import upgrade
from fabcity.registry import entries, keys
from schemas import api
from services.http.app import create_app
from services.mqtt.bridge import Bridge, Received
from tests.conftest import need, settings_for
from tests.services.mqtt.test_bridge_fuzz import _counts, batches, commit_and_account
from tests.support.city import register
from tests.support.servers import Database
from workers.dispatch import NoDispatch

EXAMPLES = int(os.environ.get("FABCITY_SCHEMATHESIS_EXAMPLES_PG", "20"))
BATCHES = int(os.environ.get("FABCITY_FUZZ_BATCHES_PG", "150"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[str, sessionmaker[Session]]]:
    need("PostgreSQL", "127.0.0.1", 5432)
    db = Database(prefix="fabcity_fuzz")
    upgrade.upgrade(db.url)
    engine = make_engine(db.url)
    factory = make_sessionmaker(engine)
    register(factory)  # a city, sites and a device, so that some calls find what they ask for
    try:
        yield db.url, factory
    finally:
        engine.dispose()
        db.close()


@pytest.fixture(scope="module")
def keyed_app(database: tuple[str, sessionmaker[Session]]) -> tuple[Any, dict[str, str], str]:
    url, factory = database
    with transaction(factory) as s:
        admin = keys.create(s, "admin").secret
        entries.create_city(
            s, api.CityIn(slug="elsewhere", name="Elsewhere", country="PT", timezone="UTC")
        )
        planner = keys.create(s, "planner", city="elsewhere").secret
    app = create_app(
        settings_for(url, auth="required", rate_limit_per_s=0),
        "both",
        factory=factory,
        dispatcher=NoDispatch(),
    )
    return app, {"Authorization": f"Bearer {admin}"}, planner


def _fuzz_every_operation(app: Any, headers: dict[str, str], checks: list[Any], n: int) -> int:
    """Each operation of the app's OpenAPI document, `n` generated cases each; returns how
    many operations ran."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=n,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=checks)

        run()
        operations += 1
    return operations


def test_api_on_postgresql_never_fails(keyed_app: tuple[Any, dict[str, str], str]) -> None:
    app, admin, _ = keyed_app
    assert _fuzz_every_operation(app, admin, CHECKS, EXAMPLES) >= 40


def test_another_citys_planner_is_refused_never_failed(
    keyed_app: tuple[Any, dict[str, str], str],
) -> None:
    """A planner key of `elsewhere` against every operation: 4xx or an answer, never a 500."""
    app, _, planner = keyed_app
    headers = {"Authorization": f"Bearer {planner}"}
    assert _fuzz_every_operation(app, headers, [not_a_server_error], max(1, EXAMPLES // 4)) >= 40


def test_bridge_on_postgresql_accounts_for_every_message(
    database: tuple[str, sessionmaker[Session]],
) -> None:
    url, factory = database
    bridge = Bridge(settings_for(url), factory, NoDispatch())
    prefix = bridge.settings.mqtt_topic_prefix
    seen = {"messages": 0}

    @settings(
        max_examples=BATCHES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(batch=batches(prefix))
    def run(batch: list[Received]) -> None:
        seen["messages"] += len(batch)
        commit_and_account(bridge, factory, batch)

    run()
    assert seen["messages"] >= BATCHES * 5, seen  # batches hold 5 to 40 messages


def test_bridge_on_postgresql_dead_letters_nul_bytes(
    database: tuple[str, sessionmaker[Session]],
) -> None:
    """psycopg refuses NUL in text: a payload or a topic holding one must become a dead letter
    with a reason, not a failed batch."""
    from datetime import UTC, datetime

    url, factory = database
    bridge = Bridge(settings_for(url), factory, NoDispatch())
    prefix = bridge.settings.mqtt_topic_prefix
    now = datetime.now(UTC)
    nul_json = (
        b'{"specversion":"1.0","id":"a\\u0000b","source":"/testville/lab/printer",'
        b'"type":"fabcity.flow","data":{"action":"consume","resource":"filament",'
        b'"quantity":1,"unit":"kg","ring":"city","material":"\\u0000"}}'
    )
    batch = [
        Received(f"{prefix}/testville/lab/printer/events", nul_json, 1, 1, 0, now),
        Received(f"{prefix}/testville/lab/prin\x00ter/events", b"{}", 2, 1, 0, now),
    ]
    _, dead_before = _counts(factory)
    stored, dead, kept = bridge.stored, bridge.dead_lettered, bridge.letters_kept
    bridge._commit(batch)
    assert bridge.stored - stored + bridge.dead_lettered - dead == 2
    assert _counts(factory)[1] - dead_before == bridge.letters_kept - kept
