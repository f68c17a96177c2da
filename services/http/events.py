"""The ingest API: `POST /v1/events`, one event or a batch, stored before it is acknowledged;
and the events as stored, read back: `GET /v1/events` and `GET /v1/events/{source}/{id}`.

The CloudEvents HTTP binding, both content modes:

- structured: `application/cloudevents+json` (one event), `application/cloudevents-batch+json`
  (a JSON array of events);
- binary: the attributes in `ce-*` headers, the `Content-Type` the event's `datacontenttype`,
  the body its `data`. Any content type other than `application/cloudevents*` with a
  `ce-specversion` header is binary mode.

`application/json` without `ce-*` headers is read as structured: one event, or an array of them
(as clients that know no CloudEvents media types send them).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote

import msgspec
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import AwareDatetime

from fabcity.core.db import transaction
from fabcity.core.errors import FabcityError, Invalid, PayloadTooLarge, UnsupportedMediaType
from fabcity.ingest.bounds import Bounds
from fabcity.ingest.service import ingest
from fabcity.read import events as stored
from fabcity.registry.keys import Principal
from schemas.api import IngestResult
from schemas.events import CloudEvent, EventSummary, EventType, EventView, is_json_media
from schemas.reports import Page
from services.http import timing
from services.http.dependencies import (
    AppState,
    AppStateDep,
    PagingDep,
    PrincipalDep,
    RawBody,
    Sent,
    SessionDep,
)
from services.http.problems import problem

router = APIRouter(prefix="/v1", tags=["ingest"])

INGESTED = Counter("fabcity_ingest_events_total", "Events through the ingest path", ["outcome"])

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


# A batch's events as their JSON texts: ingest reads each straight from its bytes, which
# costs half of building dicts first (and keeps the text to store as it came).
_EVENT_TEXTS = msgspec.json.Decoder(list[msgspec.Raw])


HEADER = "ce-"
# Attributes that a binary-mode request carries elsewhere than in a `ce-*` header.
_NOT_HEADERS = {
    "data": "the body is the data",
    "data_base64": "the body is the data",
    "datacontenttype": "the Content-Type header is the datacontenttype",
}


def _events(
    body: bytes, media_type: str, headers: list[tuple[str, str]], state: AppState
) -> tuple[list[Any], bool]:
    """The events of a request in either content mode, and whether it was a batch."""
    attributes = [(k[len(HEADER) :], v) for k, v in headers if k.startswith(HEADER)]
    if not media_type.startswith("application/cloudevents") and attributes:
        content_type = next((v for k, v in headers if k == "content-type"), None)
        return [_binary(attributes, content_type, body)], False
    return _parse(body, media_type, state)


def _binary(attributes: list[tuple[str, str]], content_type: str | None, body: bytes) -> Any:
    """The event of a binary-mode request, as its structured form."""
    event: dict[str, Any] = {}
    for name, value in attributes:
        if name in _NOT_HEADERS:
            raise FabcityError(f"header {HEADER}{name}: {_NOT_HEADERS[name]} in binary mode")
        if name in event:
            raise FabcityError(f"header {HEADER}{name} is given twice")
        # Header values are percent-encoded (HTTP binding, 3.1.3.2).
        event[name] = unquote(value)
    if "specversion" not in event:
        raise FabcityError(
            f"{HEADER}* headers without {HEADER}specversion: binary mode needs it "
            "(or send the event structured, as application/cloudevents+json)"
        )
    if content_type is not None:
        if not is_json_media(content_type):
            raise UnsupportedMediaType(
                f"data of content type {content_type!r}; fabcity events carry JSON "
                "(application/json, with an optional charset=utf-8)"
            )
        event["datacontenttype"] = content_type
    if body.strip():
        try:
            event["data"] = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise FabcityError(f"the body (the event's data) is not valid JSON: {exc}") from exc
    return event


def _parse(body: bytes, media_type: str, state: AppState) -> tuple[list[Any], bool]:
    """The events in a structured body, and whether it was a batch."""
    if media_type not in (SINGLE, BATCH, "application/json"):
        raise UnsupportedMediaType(
            f"send {SINGLE} (one event) or {BATCH} (a JSON array of events), or one event "
            f"in binary mode ({HEADER}* headers and a JSON body), "
            f"not {media_type or 'no content type'}"
        )
    items: list[Any] | None = None
    if media_type == BATCH or (media_type == "application/json" and _is_array(body)):
        # When it fails, orjson says what is wrong, below.
        with contextlib.suppress(msgspec.DecodeError, RecursionError):
            items = _EVENT_TEXTS.decode(body)
    if items is not None:
        batch = True
    else:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise FabcityError(f"the body is not valid JSON: {exc}") from exc
        batch = media_type == BATCH or (
            media_type == "application/json" and isinstance(parsed, list)
        )
        if batch and not isinstance(parsed, list):
            raise FabcityError(f"{BATCH} must be a JSON array of events")
        if not batch and not isinstance(parsed, dict):
            raise FabcityError(f"{SINGLE} must be one JSON object; send arrays as {BATCH}")
        items = parsed if batch else [parsed]
    if len(items) > state.settings.max_batch_events:
        raise PayloadTooLarge(
            f"{len(items)} events in one batch; at most {state.settings.max_batch_events}"
        )
    return items, batch


def _is_array(body: bytes) -> bool:
    return body[:64].lstrip()[:1] == b"["


@router.post(
    "/events",
    status_code=202,
    response_model=IngestResult,
    responses={
        400: {"description": "Malformed JSON or body shape"},
        413: {"description": "Body or batch too large"},
        415: {"description": "Wrong content type"},
        422: {"description": "The event (or every event of the batch) was refused"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                SINGLE: {"schema": CloudEvent.model_json_schema(ref_template="#/$defs/{model}")},
                BATCH: {"schema": {"type": "array", "items": {"type": "object"}}},
            },
        }
    },
)
def post_events(
    sent: Annotated[Sent, Depends(RawBody())],
    request: Request,
    state: AppStateDep,
    who: PrincipalDep,
) -> JSONResponse:
    """Store one event or a batch. Good events of a batch are stored; bad ones are reported
    by index. Repeats of a stored `(source, id)` are counted as duplicates, not stored again.

    CloudEvents structured mode (`application/cloudevents+json`, or
    `application/cloudevents-batch+json` for a batch), or binary mode: the attributes in
    `ce-*` headers (`ce-specversion`, `ce-id`, `ce-source`, `ce-type`, …) and the event's
    `data` as a JSON body."""
    # A plain `def`: FastAPI runs it in the threadpool, off the event loop. The body was read
    # (and measured) by RawBody; its media type is judged by _events.
    mark = timing.marks(request.scope)  # does nothing unless FABCITY_HTTP_TIMING is set
    mark("start")
    items, batch = _events(sent.body, sent.media_type, request.headers.items(), state)
    mark("parsed")
    # A site or device key writes its own sources only: checked per event, in the ingest path.
    result = _store(state, items, who.source_scope)
    mark("stored")
    INGESTED.labels("accepted").inc(result.accepted)
    INGESTED.labels("duplicate").inc(result.duplicates)
    INGESTED.labels("rejected").inc(len(result.rejected))
    if result.rejected and not result.accepted and not result.duplicates:
        # Nothing usable arrived: a client error, with every reason.
        return problem(
            422,
            "Invalid event" if not batch else "Every event was refused",
            "; ".join((f"[{r.index}] " if batch else "") + r.error for r in result.rejected[:20]),
            "invalid-event",
            rejected=[r.model_dump() for r in result.rejected],
        )
    return JSONResponse(result.model_dump(), status_code=202)


def _store(state: AppState, items: list[Any], scope: str | None = None) -> IngestResult:
    """Its own transaction rather than SessionDep: the worker is nudged only once the events
    are committed, or it could look for them before they are there. The commit comes before
    the 202 all the same."""
    with transaction(state.factory) as session:
        # This app's bounds (its settings), not the process's: an app made with other
        # settings, as tests and embedded callers make them, refuses by its own.
        outcome = ingest(
            session, items, scope=scope, bounds=Bounds.of(state.settings), known=state.known
        )
    if outcome.windows_marked:
        state.dispatcher.nudge()
    return outcome.result


# The events as stored, read back ------------------------------------------------------------


def viewer_of(who: Principal) -> stored.Viewer:
    """What a key may read: a site key its site's events, a planner key its city's (or every
    city's), an admin everything."""
    if who.role == "admin":
        return stored.Viewer()
    return stored.Viewer(who.city, who.site if who.role in ("site", "device") else None)


@router.get("/events", response_model=Page[EventSummary], tags=["events"])
def list_events(
    s: SessionDep,
    paging: PagingDep,
    who: PrincipalDep,
    city: str | None = None,
    site: Annotated[str | None, Query(description="Within `city`.")] = None,
    device: Annotated[str | None, Query(description="Within `site`.")] = None,
    source: str | None = None,
    type: EventType | None = None,
    start: Annotated[
        AwareDatetime | None,
        Query(alias="from", description="Events whose `time` is at or after (RFC 3339)."),
    ] = None,
    end: Annotated[
        AwareDatetime | None,
        Query(alias="to", description="Events whose `time` is before (RFC 3339)."),
    ] = None,
) -> Page[EventSummary]:
    """Stored events in the order they were stored, the newest last; each says whether it
    still counts. A site key sees its site's events, a planner key its city's."""
    key = paging.after()
    # The cursor holds an event's row id: ASCII digits, within 64 bits.
    if key is not None and not (key.isascii() and key.isdigit() and int(key) < 2**63):
        raise Invalid("`cursor` is not one this API gave; pass `next_cursor` as given")
    filters = stored.Filters(
        city=city,
        site=site,
        device=device,
        source=source,
        type=type.value if type is not None else None,
        start=_utc(start, "from"),
        end=_utc(end, "to"),
    )
    rows = stored.list_events(s, viewer_of(who), filters, int(key) if key else None, paging.rows)
    # The cursor is the last event's row id: stable while events are added.
    return paging.page(rows, lambda r: [str(r[0])], lambda r: r[1])


def _utc(at: datetime | None, name: str) -> datetime | None:
    """The instant in UTC, as events' times are stored."""
    if at is None:
        return None
    try:
        return at.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is valid RFC 3339, but before year 1 in UTC.
        raise Invalid(f"`{name}`: {at.isoformat()} lies outside years 1 to 9999 in UTC") from None


@router.get(
    "/events/{source:path}/{id}",
    response_model=EventView,
    tags=["events"],
    responses={404: {"description": "No such event, or not one this key may see"}},
)
def get_event(source: str, id: str, s: SessionDep, who: PrincipalDep) -> EventView:
    """One event as stored, the flows derived from it (with their state, and the device
    settings they were derived with), its corrections, and the windows it counts in.

    `source` as the event gave it, its leading `/` optional:
    `/v1/events/testville/lab/e-1` is event `e-1` of source `/testville/lab`."""
    source = source if source.startswith("/") else "/" + source
    return stored.get_event(s, viewer_of(who), source, id)
