"""Every error leaves as RFC 9457 problem details; no input may produce a bare 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from fabcity.core.errors import FabcityError, one_line, where
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


def install(app: FastAPI) -> None:
    @app.exception_handler(FabcityError)
    async def _domain(_: Request, exc: FabcityError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.slug)

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
                responses.setdefault(
                    "503", {"description": "The database is unavailable", "content": as_problem}
                )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
