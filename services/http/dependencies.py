"""What the HTTP endpoints take from the app: its state (settings, session factory, worker
dispatcher, set at start-up), a session that is one transaction per request, the caller, and
what several routes read alike: row ids, a raw body, a page of a list."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, NamedTuple, TypeVar

import anyio
from fastapi import Depends, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core import pagination
from fabcity.core.db import transaction
from fabcity.core.errors import PayloadTooLarge, UnsupportedMediaType
from fabcity.core.settings import Settings
from fabcity.ingest.origins import Known
from fabcity.registry.keys import ADMIN, Principal
from schemas.reports import Page
from workers.dispatch import Dispatcher

# Threads that make streamed exports: a lane of their own, beside the shared threadpool (40
# threads) that every other endpoint runs in. Exports beyond it wait for each other; each holds
# a database connection only while it reads a span. One: Python runs one thread at a time, so
# a second export thread adds little an export can use, and takes a larger share of the
# interpreter from ingest (45 exports in tests/security/test_costly_requests.py: ingest's
# median 0.15 s with one thread, 0.4 s with two, 0.9 s with four).
EXPORT_THREADS = 1


def _export_lane() -> anyio.CapacityLimiter:
    return anyio.CapacityLimiter(EXPORT_THREADS)


@dataclass
class AppState:
    """What create_app sets up once and every request shares."""

    settings: Settings
    factory: sessionmaker[Session]
    dispatcher: Dispatcher
    exports: anyio.CapacityLimiter = field(default_factory=_export_lane)
    # The sources and resources ingest resolved, kept while the registry stands still.
    known: Known = field(default_factory=Known)


# The dependencies that only read the request are `async def`: FastAPI would run a plain `def`
# in the threadpool, a thread hop per request for an attribute lookup.


async def app_state(request: Request) -> AppState:
    """The state create_app put on the app as `app.state.fabcity`."""
    found: AppState = request.app.state.fabcity
    return found


AppStateDep = Annotated[AppState, Depends(app_state)]


def session(state: AppStateDep) -> Iterator[Session]:
    """The request's one transaction: committed when the endpoint returns, rolled back when it
    raises. A sync generator, so FastAPI opens and commits it in the threadpool."""
    with transaction(state.factory) as opened:
        yield opened


# scope="function": the commit runs as soon as the endpoint returns, before the response is
# sent. A client that got a 2xx knows its write is stored, and a commit that fails becomes a
# problem response, never a 2xx. (The default scope for a dependency with `yield`, "request",
# would commit only after the response had gone.)
SessionDep = Annotated[Session, Depends(session, scope="function")]


async def principal(request: Request) -> Principal:
    """The caller, as services.http.auth found it (an admin when auth is off)."""
    found: Principal = getattr(request.state, "principal", ADMIN)
    return found


PrincipalDep = Annotated[Principal, Depends(principal)]

# Row ids are 64-bit in PostgreSQL and SQLite: a larger number names nothing (a 404 problem,
# not an overflow deep in the database driver).
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A row id.")]


class Sent(NamedTuple):
    """A request's body as it came, and its media type (lower case, without parameters)."""

    body: bytes
    media_type: str


class RawBody:
    """A dependency for endpoints that read their body themselves: the body and its media type.

    A body over the limit is a 413 (a declared length over it was refused before routing, in
    services.http.auth; a chunked one is measured here); a media type not in `allowed` is a 415.
    Without `allowed` any type passes, for the endpoint to judge."""

    def __init__(self, *allowed: str) -> None:
        self.allowed = allowed

    async def __call__(self, request: Request, state: AppStateDep) -> Sent:
        limit = state.settings.max_body_bytes
        body = await request.body()
        if len(body) > limit:
            raise PayloadTooLarge(f"body of {len(body)} bytes; at most {limit}")
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if self.allowed and media_type not in self.allowed:
            raise UnsupportedMediaType(
                f"send one of {', '.join(self.allowed)}, not {media_type or 'no content type'}"
            )
        return Sent(body, media_type)


# Keyset pages of a list: the `limit` and `cursor` query parameters, and a page made from the
# rows read.

Row = TypeVar("Row")
Item = TypeVar("Item", bound=BaseModel)

Limit = Annotated[
    int, Query(ge=1, le=pagination.MAX_LIMIT, description="Items per page, at most 1000.")
]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


@dataclass(frozen=True)
class Paging:
    """What a list was asked for. The cursor is decoded only where the endpoint asks for it,
    so an unknown city or site is still a 404 before a bad cursor is a 422."""

    limit: int
    cursor: str | None

    @property
    def rows(self) -> int:
        """How many rows to read: one more than a page, which only says that more follow."""
        return self.limit + 1

    def after(self) -> str | None:
        """The key of the last item of the previous page, for lists keyed by one slug."""
        key = pagination.decode(self.cursor, 1)
        return key[0] if key else None

    def after_pair(self) -> tuple[str, str] | None:
        """The same for lists keyed by two slugs (a site's, then a device's)."""
        key = pagination.decode(self.cursor, 2)
        return (key[0], key[1]) if key else None

    def page(
        self, rows: Sequence[Row], key: Callable[[Row], list[str]], body: Callable[[Row], Item]
    ) -> Page[Item]:
        """A page from the `rows` read."""
        more = len(rows) > self.limit
        return Page[Item](
            items=[body(r) for r in rows[: self.limit]],
            next_cursor=pagination.encode(key(rows[self.limit - 1])) if more else None,
        )


async def paging(limit: Limit = pagination.DEFAULT_LIMIT, cursor: Cursor = None) -> Paging:
    """`async`: it only reads parameters, so it need not take a worker thread."""
    return Paging(limit, cursor)


PagingDep = Annotated[Paging, Depends(paging)]
