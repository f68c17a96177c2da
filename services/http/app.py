"""The HTTP apps. `ingest` (write-heavy) and `query` (read-heavy) scale apart; `both` is one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import make_asgi_app
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.core.settings import Settings
from services.http import (
    access,
    auth,
    dashboard,
    events,
    metrics,
    problems,
    registry,
    standards,
    statistics,
)
from services.http.dependencies import AppState, AppStateDep
from services.http.problems import problem
from workers.dispatch import CeleryDispatcher, Dispatcher, NoDispatch

Role = Literal["both", "ingest", "query"]


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
        version="0.1.0",
        lifespan=lifespan,
        # Who may call what: one check for every route, by the policy table of services/http/auth.
        dependencies=[Depends(auth.authorize)],
    )
    if factory is None:
        factory = make_sessionmaker(make_engine(settings.database_url))
    app.state.fabcity = AppState(settings, factory, dispatcher or dispatcher_for(settings))
    problems.install(app)
    auth.install(app, settings, factory)
    app.include_router(access.router)
    if role in ("both", "ingest"):
        app.include_router(events.router)
        app.include_router(standards.write)
    if role in ("both", "query"):
        app.include_router(registry.router)
        app.include_router(metrics.router)
        app.include_router(statistics.router)
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

    app.mount("/metrics", make_asgi_app())
    problems.document(app)
    return app
