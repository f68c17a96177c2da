"""Every error leaves as RFC 9457 problem details; no input may produce a bare 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from fabcity.errors import FabcityError

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
        found = [
            (".".join(str(p) for p in e.get("loc", ())), str(e.get("msg", "")))
            for e in exc.errors()
        ]
        detail = "; ".join(f"{where}: {msg}" for where, msg in found)
        errors = [{"loc": where, "msg": msg} for where, msg in found]
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
