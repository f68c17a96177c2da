"""Operators' endpoints: API keys (`/v1/keys`) and dead letters (`/v1/dead-letters`).

Who may call them is said in services/http/auth.py (admins only).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from fabcity.core import models
from fabcity.core.db import transaction
from fabcity.ingest import deadletters
from fabcity.ingest import replay as replaying
from fabcity.registry import keys
from schemas import access
from services.http.dependencies import AppState, AppStateDep, PrincipalDep, RowId, SessionDep

router = APIRouter(prefix="/v1")


# Keys ---------------------------------------------------------------------------------------


@router.get("/whoami", response_model=access.Caller, tags=["access"])
def whoami(who: PrincipalDep) -> access.Caller:
    """The calling key's role and the city, site and device it is bound to: a lab's page
    learns from its key where it reports, without reading the registry."""
    return access.Caller(role=who.role, city=who.city, site=who.site, device=who.device)


def _issued(issued: keys.Issued) -> access.IssuedKey:
    return access.IssuedKey.model_validate(
        {**access.Key.model_validate(issued.key).model_dump(), "secret": issued.secret}
    )


@router.get("/keys", response_model=list[access.Key], tags=["access"])
def list_keys(
    s: SessionDep, revoked: Annotated[bool, Query(description="Also list revoked keys.")] = False
) -> list[access.Key]:
    return [access.Key.model_validate(k) for k in keys.list_keys(s, revoked)]


@router.post("/keys", response_model=access.IssuedKey, status_code=201, tags=["access"])
def create_key(body: access.KeyIn, s: SessionDep) -> access.IssuedKey:
    """Make a key. Its `secret` is in this answer only: only its hash is kept."""
    return _issued(keys.create(s, body.role, body.city, body.site, body.device, body.name))


@router.get("/keys/{key_id}", response_model=access.Key, tags=["access"])
def get_key(key_id: RowId, s: SessionDep) -> access.Key:
    return access.Key.model_validate(keys.get(s, key_id))


@router.delete("/keys/{key_id}", status_code=204, tags=["access"])
def revoke_key(key_id: RowId, s: SessionDep) -> Response:
    """Revoke a key: refused from the next request on (and by the broker from the next
    `fabcity broker-config`)."""
    keys.revoke(s, key_id)
    return Response(status_code=204)


@router.post(
    "/keys/{key_id}/rotate", response_model=access.IssuedKey, status_code=201, tags=["access"]
)
def rotate_key(key_id: RowId, s: SessionDep) -> access.IssuedKey:
    """A new key with the same role and tenant; the old one is revoked."""
    return _issued(keys.rotate(s, key_id))


# Dead letters -------------------------------------------------------------------------------


def _detail(letter: models.DeadLetter) -> access.DeadLetterDetail:
    return access.DeadLetterDetail.model_validate(
        {
            **deadletters.described(letter).model_dump(),
            "payload": letter.payload.decode("utf-8", errors="replace"),
            "payload_base64": base64.b64encode(letter.payload).decode(),
        }
    )


@router.get("/dead-letters", response_model=list[access.DeadLetter], tags=["dead letters"])
def list_dead_letters(
    s: SessionDep,
    topic_prefix: Annotated[str | None, Query(max_length=1024)] = None,
    reason_contains: Annotated[str | None, Query(max_length=1000)] = None,
    received_before: datetime | None = None,
    received_after: datetime | None = None,
    after_id: Annotated[int, Query(ge=0, description="The last id of the previous page.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[access.DeadLetter]:
    """What could not become an event, oldest first, with the reason."""
    wanted = access.DeadLetterFilter(
        topic_prefix=topic_prefix,
        reason_contains=reason_contains,
        received_before=received_before,
        received_after=received_after,
    )
    found = deadletters.list_letters(s, wanted, limit, after_id)
    return [deadletters.described(letter) for letter in found]


@router.get(
    "/dead-letters/{letter_id}", response_model=access.DeadLetterDetail, tags=["dead letters"]
)
def get_dead_letter(letter_id: RowId, s: SessionDep) -> access.DeadLetterDetail:
    return _detail(deadletters.get(s, letter_id))


def replay(state: AppState, ids: list[int]) -> access.ReplayResult:
    """Run dead letters through the bridge's path again, a chunk per transaction.

    Its own transactions, not the request's session: each chunk of 500 is committed as it is
    done (a large replay never holds one long transaction), and the worker is nudged only once
    the events are committed, so that it finds them."""
    total = access.ReplayResult(replayed=0, ingested=0, still_dead=0, events=0)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        with transaction(state.factory) as s:
            done = replaying.replay(
                s, chunk, state.settings.mqtt_topic_prefix, state.settings.mqtt_max_payload_bytes
            )
        total.replayed += done.ingested + done.still_dead
        total.ingested += done.ingested
        total.still_dead += done.still_dead
        total.events += done.events
    if total.events:
        state.dispatcher.nudge()
    return total


# The replays are plain `def`: FastAPI runs them in the threadpool, and `replay` keeps its
# transactions (see there), so they take the app's state rather than SessionDep.


@router.post(
    "/dead-letters/{letter_id}/replay", response_model=access.ReplayResult, tags=["dead letters"]
)
def replay_dead_letter(letter_id: RowId, state: AppStateDep) -> access.ReplayResult:
    """Run one dead letter through the routing and the ingest path again (after its device
    was registered, say). It is deleted if it now goes through, else kept with its first
    reason and this replay's outcome apart."""
    with transaction(state.factory) as s:
        deadletters.get(s, letter_id)  # an unknown letter is a 404, not an empty replay
    return replay(state, [letter_id])


@router.post("/dead-letters/replay", response_model=access.ReplayResult, tags=["dead letters"])
def replay_dead_letters(wanted: access.DeadLetterFilter, state: AppStateDep) -> access.ReplayResult:
    """Replay every dead letter the filter names (`{}`: all of them), oldest first."""
    with transaction(state.factory) as s:
        ids = deadletters.ids_matching(s, wanted)
    return replay(state, ids)
