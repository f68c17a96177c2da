"""One error hierarchy; each error knows its HTTP status. Turned into RFC 9457 at the edge."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class FabcityError(Exception):
    status, title, slug = 400, "Bad request", "bad-request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(FabcityError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(FabcityError):
    status, title, slug = 409, "Already exists", "conflict"


class Invalid(FabcityError):
    status, title, slug = 422, "Invalid input", "invalid"


class UnitError(Invalid):
    title, slug = "Unit cannot be converted", "unit"


class PayloadTooLarge(FabcityError):
    status, title, slug = 413, "Payload too large", "too-large"


class UnsupportedMediaType(FabcityError):
    status, title, slug = 415, "Unsupported media type", "media-type"


class Busy(FabcityError):
    """Nothing was done, for a while: what the request needs is being changed. Retry after
    `retry_after` seconds."""

    status, title, slug = 503, "Busy", "busy"
    retry_after = 5


def one_line(errors: Iterable[Mapping[str, Any]], root: str = "event") -> str:
    """Validation errors (pydantic's `exc.errors()`, FastAPI's too) as one line that says where
    and what, for a person to fix: `data.quantity: Input should be greater than 0; time: …`.
    An error at the top of the input is placed at `root`."""
    return "; ".join(f"{where(e, root)}: {e.get('msg', '')}" for e in errors)


def where(error: Mapping[str, Any], root: str = "event") -> str:
    """Where one validation error lies, as a dotted path."""
    return ".".join(str(p) for p in error.get("loc", ())) or root
