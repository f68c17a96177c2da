"""The app as a whole: health, readiness, its OpenAPI document, unknown paths, and the
routes each role serves."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.http.app import create_app
from tests.conftest import settings_for
from tests.services.http.support import (
    BATCH,
    METRICS_URL,
    SINGLE,
    Sessions,
    assert_problem,
    post,
)
from tests.support.city import event, flow
from workers.dispatch import NoDispatch


class TestOperations:
    """Health, readiness, the OpenAPI document, unknown paths, and the roles' routes."""

    def test_health_and_readiness(self, client: TestClient) -> None:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready"}

    def test_openapi_lists_the_ingest_and_query_paths(self, client: TestClient) -> None:
        spec = client.get("/openapi.json").json()
        assert "post" in spec["paths"]["/v1/events"]
        content = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]
        assert {SINGLE, BATCH} <= content.keys()
        assert "/v1/cities/{city}/metrics" in spec["paths"]

    def test_an_unknown_path_is_a_404_problem(self, client: TestClient) -> None:
        assert_problem(client.get("/v1/nothing-here"), 404)

    def test_roles_split_the_routes(self, sqlite_url: str, sessions: Sessions) -> None:
        settings = settings_for(sqlite_url)
        ingest = TestClient(
            create_app(settings, "ingest", factory=sessions, dispatcher=NoDispatch())
        )
        query = TestClient(create_app(settings, "query", factory=sessions, dispatcher=NoDispatch()))

        assert post(ingest, event(flow())).status_code == 202
        assert ingest.get(METRICS_URL).status_code == 404
        assert post(query, event(flow())).status_code in (404, 405)
        assert query.get(METRICS_URL).status_code == 200
