"""Every error leaves as RFC 9457 problem details; no input may produce a bare 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from fabcity.core.errors import Busy, FabcityError, one_line, where
from schemas.api import Problem

log = logging.getLogger(__name__)
TYPE_BASE = "https://fabcity.dev/problems/"
MEDIA_TYPE = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


class RefuseNul:
    """A NUL character in the path or the query string is refused before routing: no slug,
    date or name holds one, and PostgreSQL cannot even compare a text with one (psycopg
    raises, and `GET /v1/cities/%00/metrics` was a 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            detail = "the path or the query holds a NUL character (%00); remove it"
            await problem(400, "Bad request", detail, "bad-request")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_middleware(RefuseNul)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # The client hung up before its body had all come: nothing was stored and nobody
        # reads an answer. Not an error of ours, so not logged as one (a traceback and a 500).
        log.info(
            "client left before sending its whole body: %s %s", request.method, request.url.path
        )
        return problem(400, "Client disconnected", "the body was cut short", "disconnected")

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the checks let through (a NUL in a text, a number out
        # of its column's range): the request's fault, said as such, never a 500.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "a value out of range"
        return problem(
            422, "Invalid input", f"the database cannot hold a value: {reason}", "invalid"
        )

    @app.exception_handler(FabcityError)
    async def _domain(_: Request, exc: FabcityError) -> JSONResponse:
        wait = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        return problem(exc.status, exc.title, exc.detail, exc.slug, headers=wait)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        found = exc.errors()
        detail = one_line(found, root="")
        errors = [{"loc": where(e, root=""), "msg": str(e.get("msg", ""))} for e in found]
        return problem(422, "Invalid input", detail, "invalid", errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return problem(
            exc.status_code,
            str(exc.detail),
            str(exc.detail),
            f"http-{exc.status_code}",
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "Internal error", "this is a bug; it has been logged", "internal")

    @app.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc.orig)
        return problem(
            503,
            "Database unavailable",
            "nothing was stored; retry shortly",
            "unavailable",
            headers={"Retry-After": "5"},
        )


def document(app: FastAPI) -> None:
    """Say in the OpenAPI document what every route may answer besides its success: a problem
    (`application/problem+json`) for any 4xx and for 503, and which keys it takes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema()
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        ref = {"$ref": "#/components/schemas/Problem"}
        as_problem = {MEDIA_TYPE: {"schema": ref}}
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        schema["security"] = [{"bearer": []}, {"apiKey": []}]
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                for code, response in responses.items():
                    if code[0] in "45":
                        response["content"] = as_problem
                responses.setdefault("4XX", {"description": "A problem", "content": as_problem})
                unavailable = (
                    "The database is unavailable, or what the request needs is being changed "
                    "(`busy`: a city's time zone, a device's settings); nothing was done: retry "
                    "after `Retry-After` seconds"
                )
                responses.setdefault("503", {"description": unavailable, "content": as_problem})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
