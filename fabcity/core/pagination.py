"""Cursor pagination: a cursor is the opaque key of the last item a page held."""

from __future__ import annotations

import base64
import binascii
import json

from fabcity.core.errors import Invalid

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def encode(key: list[str]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None, width: int) -> list[str] | None:
    """The key a cursor holds; `width` strings, or 422 when the cursor was not ours."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise Invalid("`cursor` is not one this API gave; pass `next_cursor` as given") from exc
    if not (isinstance(key, list) and len(key) == width and all(isinstance(k, str) for k in key)):
        raise Invalid("`cursor` is not one this API gave; pass `next_cursor` as given")
    return key
