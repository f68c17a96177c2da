"""Property tests of the whole HTTP API against its own OpenAPI document (schemathesis): no input
gives a server error, and every answer, refusals included, is what the document says.

Runs the ASGI app in process on SQLite with an admin key; at least 1,000 cases in all
(`FABCITY_SCHEMATHESIS_EXAMPLES` per operation, 40 by default).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.migrations import upgrade
from fabcity.registry import keys
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.city import register
from workers.dispatch import NoDispatch

EXAMPLES = int(os.environ.get("FABCITY_SCHEMATHESIS_EXAMPLES", "40"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _app() -> tuple[Any, dict[str, str]]:
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='fabcity-schemathesis-')) / 'f.db'}"
    upgrade.upgrade(url)
    factory = make_sessionmaker(make_engine(url))
    register(factory)  # a city, sites and a device, so that some calls find what they ask for
    with transaction(factory) as s:
        secret = keys.create(s, "admin").secret
    app = create_app(
        settings_for(url, auth="required", rate_limit_per_s=0),
        "both",
        factory=factory,
        dispatcher=NoDispatch(),
    )
    return app, {"Authorization": f"Bearer {secret}"}


APP, ADMIN = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
CASES = {"count": 0}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_and_never_fails(case: Any) -> None:
    CASES["count"] += 1
    case.call_and_validate(headers=ADMIN, checks=CHECKS)


def test_enough_cases_ran() -> None:
    """The test above ran the number of cases it promises (it runs first, in file order)."""
    print(f"schemathesis ran {CASES['count']} cases")
    if EXAMPLES >= 40:
        assert CASES["count"] >= 1000, CASES["count"]
