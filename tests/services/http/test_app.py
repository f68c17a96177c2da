"""The app as a whole: health, readiness, its OpenAPI document (checked by the standard
validator, every `$ref` resolved), unknown paths, the routes each role serves, and what it
serves with no network: /metrics, /docs and /redoc."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from services.http.app import create_app
from tests.conftest import settings_for
from tests.services.http.support import (
    BATCH,
    METRICS_URL,
    SINGLE,
    MakeClient,
    Sessions,
    assert_problem,
    post,
)
from tests.services.http.test_dashboard import browser  # noqa: F401  (a fixture)
from tests.support.city import event, flow
from tests.support.servers import serving
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


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


class TestOpenApiDocument:
    """The document as validators and generators read it: one whole, every name its own."""

    def test_it_passes_the_openapi_spec_validator(self, client: TestClient) -> None:
        validate(client.get("/openapi.json").json())

    def test_every_ref_resolves_within_the_document(self, client: TestClient) -> None:
        spec = client.get("/openapi.json").json()
        refs = set(refs_in(spec))
        assert "#/components/schemas/EventType" in refs  # the events body's, once `$defs`
        for ref in sorted(refs):
            assert ref.startswith("#/"), f"{ref} points outside the document"
            # A JSON pointer (RFC 6901) into the document itself: it must find something.
            node: Any = spec
            for token in ref[2:].split("/"):
                token = token.replace("~1", "/").replace("~0", "~")
                assert isinstance(node, dict) and token in node, f"{ref} resolves to nothing"
                node = node[token]

    def test_no_two_schemas_share_a_title(self, client: TestClient) -> None:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        titles = Counter(s.get("title", name) for name, s in schemas.items())
        assert not [t for t, n in titles.items() if n > 1]
        # Read and answered differently, the statistics keep both precise schemas: an
        # answer's decimals are strings, a body's may be numbers.
        answered = schemas["MfaRow-Output"]["properties"]["de"]
        assert answered["type"] == "string"
        assert {"type": "string"} in schemas["MfaRow-Input"]["properties"]["de"]["anyOf"]

    def test_the_document_is_made_whole_once_and_served_as_made(self, client: TestClient) -> None:
        app = client.app
        assert isinstance(app, FastAPI)
        assert app.openapi() is app.openapi()
        assert client.get("/openapi.json").json() == orjson.loads(orjson.dumps(app.openapi()))


class TestServedWithoutTheNetwork:
    """/metrics as Prometheus scrapes it, and /docs and /redoc from local assets."""

    def test_metrics_answers_at_metrics_itself(self, make_client: MakeClient) -> None:
        client = make_client(auth="required")  # public, as a scraper has no key
        for method in (client.get, client.head):
            response = method("/metrics", follow_redirects=False)
            assert response.status_code == 200, response.headers
            assert response.headers["content-type"].startswith("text/plain")
        assert "# TYPE " in client.get("/metrics").text  # the exposition format itself

    @pytest.mark.parametrize("page", ["/docs", "/redoc"])
    def test_the_docs_load_every_asset_from_this_api(
        self, make_client: MakeClient, page: str
    ) -> None:
        client = make_client(auth="required")  # documentation is public
        response = client.get(page)
        assert response.status_code == 200
        html = response.text
        # Every URL the page loads: scripts, style sheets, icons, and the document.
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        urls += re.findall(r"""(?:url|spec-url)\s*[:=]\s*["']([^"']+)["']""", html)
        assert "/openapi.json" in urls
        assert any(u.endswith(".js") for u in urls)
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url}"
            fetched = client.get(url)
            assert fetched.status_code == 200, url
            if url.endswith(".js"):
                assert "javascript" in fetched.headers["content-type"]
                assert len(fetched.content) > 100_000  # the bundle itself, not a stub
        assert "cdn." not in html and "fonts.googleapis" not in html

    def test_swagger_ui_sends_the_document_to_no_validator(self, client: TestClient) -> None:
        assert '"validatorUrl": null' in client.get("/docs").text


@pytest.fixture
def served(sqlite_url: str, sessions: Sessions) -> Iterator[str]:
    app = create_app(settings_for(sqlite_url), "both", factory=sessions, dispatcher=NoDispatch())
    with serving(app) as url:
        yield url


@pytest.mark.parametrize(
    ("page", "rendered"),
    [
        # Swagger UI: the title, and one block per operation of the document
        ("/docs", "document.querySelectorAll('.swagger-ui .opblock').length"),
        # ReDoc: one menu entry per operation
        ("/redoc", "document.querySelectorAll('[data-item-id*=\"operation/\"]').length"),
    ],
)
def test_the_docs_render_in_a_browser(
    browser: Any,  # noqa: F811  (the imported fixture)
    served: str,
    page: str,
    rendered: str,
) -> None:
    """Headless Chromium (the dashboard test's) on the page: a page whose script did not load
    is blank, and renders no operation."""
    browser.get(served + page)
    deadline = time.monotonic() + 30
    while not browser.execute_script(f"return {rendered}"):
        assert time.monotonic() < deadline, f"{page} rendered nothing"
        time.sleep(0.2)
    assert "fabcity" in browser.execute_script("return document.body.innerText")
    assert browser.execute_script(f"return {rendered}") > 20
