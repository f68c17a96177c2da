"""The HTTP apps. `ingest` (write-heavy) and `query` (read-heavy) scale apart; `both` is one."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.core.settings import Settings
from fabcity.registry.entries import DEFAULT_RESOURCES
from schemas import vocabulary
from services.http import (
    access,
    auth,
    dashboard,
    definitions,
    events,
    metrics,
    problems,
    registry,
    spreadsheets,
    standards,
    statistics,
    targets,
    timing,
)
from services.http.dependencies import AppState, AppStateDep
from services.http.problems import problem
from workers.dispatch import CeleryDispatcher, Dispatcher, NoDispatch

Role = Literal["both", "ingest", "query"]

# Swagger UI and ReDoc come from the fastapi-offline wheel, as the dashboard's plotly.js comes
# from plotly's: /docs works with no network beyond this API. Under /static/, a public prefix.
DOCS_ASSETS = "/static/docs"


def dispatcher_for(settings: Settings) -> Dispatcher:
    return CeleryDispatcher(settings) if settings.worker_mode == "celery" else NoDispatch()


def create_app(
    settings: Settings,
    role: Role = "both",
    factory: sessionmaker[Session] | None = None,
    dispatcher: Dispatcher | None = None,
) -> FastAPI:
    """An app for `role`. Embedded callers pass their own factory and dispatcher."""
    owned = factory is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            app.state.fabcity.factory.kw["bind"].dispose()

    app = FastAPI(
        title="fabcity",
        summary="How far a city is from being a Fab City: locally productive, globally connected.",
        # The words of a flow, on /docs: actions (with an example each), rings, fates and the
        # default resources.
        description=vocabulary.describe(
            (r.name, r.unit, r.mfa_category, r.secondary) for r in DEFAULT_RESOURCES
        ),
        version="0.1.0",
        lifespan=lifespan,
        # Served below from local assets: FastAPI's own pages load Swagger UI from a CDN.
        docs_url=None,
        redoc_url=None,
        # Who may call what: one check for every route, by the policy table of services/http/auth.
        dependencies=[Depends(auth.authorize)],
    )
    if factory is None:
        factory = make_sessionmaker(make_engine(settings.database_url))
    app.state.fabcity = AppState(settings, factory, dispatcher or dispatcher_for(settings))
    problems.install(app)
    auth.install(app, settings, factory)
    if timing.enabled():  # bench.http_spread: outermost, so it sees the request whole
        app.add_middleware(timing.Timing, factory=factory)
    app.include_router(access.router)
    # The ingest role serves the event stream and nothing else: every other route (the
    # registry, imports, subscriptions, metrics, the dashboard) is the query role's. Their paths
    # are then apart by prefix (`/v1/events` against the rest), so one reverse proxy or
    # Ingress in front routes them by path alone (deploy/proxy, deploy/k8s/ingress.yaml).
    if role in ("both", "ingest"):
        # Before the events router: its /v1/events/{…} routes would take these paths.
        app.include_router(spreadsheets.router)
        app.include_router(events.router)
    if role in ("both", "query"):
        app.include_router(standards.write)
        app.include_router(registry.router)
        app.include_router(metrics.router)
        app.include_router(statistics.router)
        app.include_router(targets.router)
        app.include_router(definitions.router)
        app.include_router(standards.read)
        app.include_router(dashboard.router)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=None)
    def readyz(state: AppStateDep) -> JSONResponse | dict[str, str]:
        """The database answers."""
        # Its own session, not SessionDep: a database that does not answer is this endpoint's
        # answer (503 not-ready), not an error of the request.
        try:
            with state.factory() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:
            return problem(503, "Not ready", f"database: {exc.__class__.__name__}", "not-ready")
        return {"status": "ready"}

    # A route, not a mount: a mount answers /metrics with a redirect to /metrics/, and
    # Prometheus scrapes /metrics. Added as a plain route, it is outside the policy check, as
    # the mount was (a public path of services/http/auth).
    app.router.routes.append(Route("/metrics", _Exposition(make_asgi_app()), methods=["GET"]))
    _serve_docs(app)
    problems.document(app)
    _hold_together(app)
    return app


class _Exposition:
    """Prometheus' ASGI app as a route's endpoint: Starlette wraps a plain function as a
    request handler, but calls an object as an ASGI app, which is what this is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def docs_assets() -> Path:
    """The static folder of the installed fastapi-offline wheel, found without importing it."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed; it serves /docs and /redoc")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _serve_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc from local assets, as FastAPI's own pages but for where
    their scripts come from. Plain routes, like FastAPI's: outside the policy check."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect = "/docs/oauth2-redirect"
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets()), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + redirect,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            # Swagger UI would otherwise send the document to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def swagger_ui_redirect(_: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(redirect, swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


def _hold_together(app: FastAPI) -> None:
    """Make the OpenAPI document one whole, as generators and validators read it:

    - a schema given by hand (a request body's `openapi_extra`) carries its own `$defs`, and
      its `#/$defs/…` refs point at the root of the OpenAPI document, where there are none:
      the definitions move to `components/schemas` and the refs follow them;
    - a model read and answered differently is two components, `X-Input` and `X-Output`, that
      FastAPI leaves with one title `X`: generators name classes by title, see two classes of
      one name and drop both. Each keeps its own precise schema (an answer's decimals are
      strings) under a title of its own.
    """
    build = app.openapi
    done: list[dict[str, Any]] = []  # the document once made whole; FastAPI caches it too

    def openapi() -> dict[str, Any]:
        if done:
            return done[0]
        schema = build()
        components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
        _hoist_defs(schema, components)
        for name, component in components.items():
            if name.endswith(("-Input", "-Output")) and isinstance(component, dict):
                component["title"] = name
        app.openapi_schema = schema
        done.append(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _hoist_defs(node: Any, components: dict[str, Any]) -> None:
    if isinstance(node, list):
        for item in node:
            _hoist_defs(item, components)
        return
    if not isinstance(node, dict):
        return
    for name, definition in node.pop("$defs", {}).items():
        held = components.setdefault(name, definition)
        if held != definition:
            raise ValueError(f"two different schemas are both named {name!r}")
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
    for value in list(node.values()):  # hoisting may add to `components` as it goes
        _hoist_defs(value, components)
