"""Replaying dead letters: what was refused runs through the routing and the ingest path
again (after a device was registered, say); what now goes through is deleted. What still
cannot keeps its row and the reason it was first refused: the replay's outcome is kept apart
(`replays`, `last_replay_at`, `last_replay_outcome`), since a replay can fail for reasons of
its own and the first reason is the evidence. A letter whose payload was cut short is not
replayed: its last replay's outcome says so."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fabcity.adapters.base import Message
from fabcity.core import models
from fabcity.ingest.deadletters import as_text, not_replayable
from fabcity.ingest.intake import route
from fabcity.ingest.service import ingest
from fabcity.ingest.topics import MAX_PAYLOAD_BYTES, is_native, to_event
from schemas.fast import Preread


@dataclass
class Replayed:
    ingested: int  # dead letters that went through and were deleted
    still_dead: int
    events: int  # events stored by the replay (duplicates not counted)
    cut: int = 0  # of the still dead, those not run at all: their payload was cut short


def replay(
    session: Session,
    ids: list[int] | None,
    native_prefix: str,
    max_payload: int = MAX_PAYLOAD_BYTES,
) -> Replayed:
    """Replay the given dead letters (all of them when `ids` is None), oldest first. A letter
    on a native topic is read as the bridge reads it (`topics.to_event`); any other goes
    through the device adapters' routing."""
    query = select(models.DeadLetter).order_by(models.DeadLetter.id)
    if ids is not None:
        query = query.where(models.DeadLetter.id.in_(ids))
    letters = list(session.scalars(query))
    reasons: dict[int, str] = {}
    not_replayed = 0
    events: list[tuple[int, dict[str, Any] | Preread]] = []
    device_letters: list[tuple[int, Message]] = []
    for letter in letters:
        topic = letter.topic or ""
        received_at = letter.received_at  # aware on both databases (`UtcDateTime`)
        cut = not_replayable(letter)
        if cut is not None:
            # Its first bytes could parse into an event the whole payload never was.
            reasons[letter.id] = cut
            not_replayed += 1
        elif is_native(topic, native_prefix):
            parsed = to_event(topic, letter.payload, native_prefix, received_at, max_payload)
            if parsed.event is None:
                reasons[letter.id] = parsed.reason or "refused"
            else:
                events.append((letter.id, parsed.event))
        else:
            # With the PUBLISH's properties: a binary-mode CloudEvent is in them.
            properties = dict((name, value) for name, value in letter.properties or ())
            message = Message(topic, letter.payload, received_at, properties, letter.content_type)
            device_letters.append((letter.id, message))
    routed = route(session, [m for _, m in device_letters])
    by_message = {id(m): letter_id for letter_id, m in device_letters}
    for message, reason in routed.dead:
        reasons.setdefault(by_message[id(message)], reason)
    events.extend((by_message[id(m)], e) for m, e in routed.events)
    outcome = ingest(session, [e for _, e in events])
    for rejected in outcome.result.rejected:
        reasons.setdefault(events[rejected.index][0], rejected.error)
    done = [letter.id for letter in letters if letter.id not in reasons]
    now = datetime.now(UTC)
    for letter in letters:
        if letter.id in reasons:
            letter.replays = (letter.replays or 0) + 1
            letter.last_replay_at = now
            letter.last_replay_outcome = as_text(reasons[letter.id])
    if done:
        session.execute(delete(models.DeadLetter).where(models.DeadLetter.id.in_(done)))
    return Replayed(len(done), len(reasons), outcome.result.accepted, not_replayed)
