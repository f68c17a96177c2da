"""One error hierarchy; each error knows its HTTP status. Turned into RFC 9457 at the edge."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class FabcityError(Exception):
    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(FabcityError):
    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(FabcityError):
    status = 409
    title = "Already exists"
    slug = "conflict"


class Invalid(FabcityError):
    status = 422
    title = "Invalid input"
    slug = "invalid"


class UnitError(Invalid):
    title = "Unit cannot be converted"
    slug = "unit"


class PayloadTooLarge(FabcityError):
    status = 413
    title = "Payload too large"
    slug = "too-large"


class UnsupportedMediaType(FabcityError):
    status = 415
    title = "Unsupported media type"
    slug = "media-type"


def one_line(errors: Iterable[Mapping[str, Any]], root: str = "event") -> str:
    """Validation errors (pydantic's `exc.errors()`, FastAPI's too) as one line that says where
    and what, for a person to fix: `data.quantity: Input should be greater than 0; time: …`.
    An error at the top of the input is placed at `root`."""
    return "; ".join(f"{where(e, root)}: {e.get('msg', '')}" for e in errors)


def where(error: Mapping[str, Any], root: str = "event") -> str:
    """Where one validation error lies, as a dotted path."""
    return ".".join(str(p) for p in error.get("loc", ())) or root
