"""A client generated from the app's own OpenAPI document, as a user of the API makes one.

openapi-python-client (offline: it reads the document from a file) writes a package into the
test's folder; the test imports it and, with API keys as a user has them, stores a year of
statistics and reads metrics, the summary and the statistics from the app served by uvicorn
on SQLite. A document whose schemas share a name, or whose refs lead nowhere, loses models
and responses in the generated client: the calls below then answer None, not a model.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from types import ModuleType
from typing import Any

import orjson
import pytest

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.ingest.service import ingest
from fabcity.migrations import upgrade
from fabcity.registry import keys
from fabcity.rollups.recompute import recompute_dirty
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.city import CITY, event, flow, register
from tests.support.servers import serving
from workers.dispatch import NoDispatch

PACKAGE = "fabcity_generated_client"
DAY = date(2026, 3, 10)
# What the generator says when it leaves a model or a response out of the client.
DROPPED = ("Unable to parse", "Cannot parse response", "Could not find reference", "duplicate")


class Live:
    def __init__(self, url: str, admin: str, planner: str) -> None:
        self.url, self.admin, self.planner = url, admin, planner


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The whole app on a free port, keys required, with a day of flows in Testville."""
    url = f"sqlite:///{tmp_path_factory.mktemp('client-db') / 'fabcity.db'}"
    upgrade.upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    register(factory)
    flows = [flow(quantity=3, ring="city"), flow("consume", "metal", 2, "kg", ring="beyond"),
             flow("produce", "part", 4, "count")]  # fmt: skip
    with transaction(factory) as s:
        assert ingest(s, [event(flows, time=f"{DAY}T11:00:00+01:00")]).result.accepted == 1
    with transaction(factory) as s:
        recompute_dirty(s, 100)
        admin = keys.create(s, "admin").secret
        planner = keys.create(s, "planner", city=CITY).secret
    settings = settings_for(url, auth="required", rate_limit_per_s=0)
    app = create_app(settings, "both", factory=factory, dispatcher=NoDispatch())
    try:
        with serving(app) as base:
            yield Live(base, admin, planner)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package openapi-python-client writes from the app's document."""
    folder = tmp_path_factory.mktemp("client")
    app = create_app(settings_for("sqlite://"), "both", dispatcher=NoDispatch())
    document = folder / "openapi.json"
    document.write_bytes(orjson.dumps(app.openapi()))
    run = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document),
         "--meta", "none", "--output-path", str(folder / PACKAGE)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    said = run.stdout + run.stderr
    assert run.returncode == 0, said
    assert not [line for line in said.splitlines() if line.startswith(DROPPED)], said
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def part(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def client_of(package: ModuleType, live: Live, key: str) -> Any:
    return package.AuthenticatedClient(
        base_url=live.url, token=key, raise_on_unexpected_status=True
    )


def test_the_generated_client_stores_and_reads_statistics(
    generated: ModuleType, live: Live
) -> None:
    models = part(generated, "models")
    put = part(generated, "api.metrics.put_statistics_v1_cities_city_statistics_year_put")
    get = part(generated, "api.metrics.get_statistics_v1_cities_city_statistics_year_get")
    body = models.StatisticsInInput.from_dict({
        "unit": "t", "population": 50, "gdp": "2500",
        "mfa": {"MF1": {"de": 40, "imp": {"abroad": 30, "rest_of_country": 20}, "exp": 10},
                "MF4": {"de": 0, "imp": 25, "exp": {"abroad": 5}}},
        "cmu": {"rcv_r": 15, "imp_w": 3, "exp_w": 2},
    })  # fmt: skip
    with client_of(generated, live, live.admin) as admin:
        stored = put.sync(CITY, 2025, client=admin, body=body)
    assert isinstance(stored, models.StatisticsOut), stored
    with client_of(generated, live, live.planner) as planner:
        got = get.sync(CITY, 2025, client=planner)
    assert isinstance(got, models.StatisticsOut), got
    assert got.accounts.dmc == "100" and got.accounts.u == "14"
    # the inputs come back as answered: exact decimals as strings, in their own model
    assert isinstance(got.inputs, models.StatisticsInOutput)
    assert got.inputs.to_dict()["mfa"]["MF1"]["imp"] == {"abroad": "30", "rest_of_country": "20"}


def test_the_generated_client_reads_metrics_and_the_summary(
    generated: ModuleType, live: Live
) -> None:
    models = part(generated, "models")
    metrics = part(generated, "api.metrics.city_metrics_v1_cities_city_metrics_get")
    summary = part(generated, "api.metrics.city_summary_v1_cities_city_summary_get")
    with client_of(generated, live, live.planner) as planner:
        series = metrics.sync(
            CITY, client=planner, names="input_kg,local_input_share", from_=DAY, to=DAY
        )
        period = summary.sync(CITY, client=planner, from_=DAY, to=DAY)
    assert isinstance(series, models.MetricsResponse), series
    values = {s.name: s.points[0].value for s in series.series}
    assert values == {"input_kg": 5, "local_input_share": pytest.approx(0.6)}
    assert isinstance(period, models.Summary), period
    figures = {f.name: f.value for f in period.figures}
    assert figures["input_kg"] == 5

    # and a refusal is the documented problem, not an unexpected status
    with client_of(generated, live, live.planner) as planner:
        refused = metrics.sync("otherville", client=planner)
    assert isinstance(refused, models.Problem) and refused.status == 403
