"""The ingest API: `POST /v1/events`, one event or a batch, stored before it is acknowledged."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import msgspec
import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from fabcity.core.db import transaction
from fabcity.core.errors import FabcityError, PayloadTooLarge, UnsupportedMediaType
from fabcity.ingest.service import ingest
from schemas.api import IngestResult
from schemas.events import CloudEvent
from services.http.dependencies import AppState, AppStateDep, PrincipalDep, RawBody, Sent
from services.http.problems import problem

router = APIRouter(prefix="/v1", tags=["ingest"])

INGESTED = Counter("fabcity_ingest_events_total", "Events through the ingest path", ["outcome"])

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


# A batch's events as their JSON texts: ingest reads each straight from its bytes, which
# costs half of building dicts first (and keeps the text to store as it came).
_EVENT_TEXTS = msgspec.json.Decoder(list[msgspec.Raw])


def _parse(body: bytes, media_type: str, state: AppState) -> tuple[list[Any], bool]:
    """The events in a body, and whether it was a batch."""
    if media_type not in (SINGLE, BATCH, "application/json"):
        raise UnsupportedMediaType(
            f"send {SINGLE} (one event) or {BATCH} (a JSON array of events), "
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
    sent: Annotated[Sent, Depends(RawBody())], state: AppStateDep, who: PrincipalDep
) -> JSONResponse:
    """Store one event or a batch. Good events of a batch are stored; bad ones are reported
    by index. Repeats of a stored `(source, id)` are counted as duplicates, not stored again."""
    # A plain `def`: FastAPI runs it in the threadpool, off the event loop. The body was read
    # (and measured) by RawBody; its media type is judged by _parse.
    items, batch = _parse(sent.body, sent.media_type, state)
    # A site or device key writes its own sources only: checked per event, in the ingest path.
    result = _store(state, items, who.source_scope)
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
        outcome = ingest(session, items, scope=scope)
    if outcome.windows_marked:
        state.dispatcher.nudge()
    return outcome.result
