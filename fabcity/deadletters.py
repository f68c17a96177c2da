"""Replaying dead letters: what was refused runs through the routing and the ingest path
again (after a device was registered, say); what now goes through is deleted, what still
cannot keeps its row with the new reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fabcity import models
from fabcity.adapters.base import Message
from fabcity.adapters.intake import route
from fabcity.ingest import ingest

# A native-topic message as an event, or the reason it is not one (the bridge's `to_event`).
NativeParser = Callable[[str, bytes, datetime], "dict[str, Any] | str"]


@dataclass
class Replayed:
    ingested: int  # dead letters that went through and were deleted
    still_dead: int
    events: int  # events stored by the replay (duplicates not counted)


def replay(
    session: Session,
    ids: list[int] | None,
    native_prefix: str,
    parse_native: NativeParser,
) -> Replayed:
    """Replay the given dead letters (all of them when `ids` is None), oldest first."""
    query = select(models.DeadLetter).order_by(models.DeadLetter.id)
    if ids is not None:
        query = query.where(models.DeadLetter.id.in_(ids))
    letters = list(session.scalars(query))
    head = native_prefix.rstrip("/") + "/"
    reasons: dict[int, str] = {}
    events: list[tuple[int, dict[str, Any]]] = []
    device_letters: list[tuple[int, Message]] = []
    for letter in letters:
        topic = letter.topic or ""
        if topic.startswith(head):
            parsed = parse_native(topic, letter.payload, letter.received_at)
            if isinstance(parsed, str):
                reasons[letter.id] = parsed
            else:
                events.append((letter.id, parsed))
        else:
            device_letters.append((letter.id, Message(topic, letter.payload, letter.received_at)))
    routed = route(session, [m for _, m in device_letters])
    by_message = {id(m): letter_id for letter_id, m in device_letters}
    for message, reason in routed.dead:
        reasons.setdefault(by_message[id(message)], reason)
    events.extend((by_message[id(m)], e) for m, e in routed.events)
    outcome = ingest(session, [e for _, e in events])
    for rejected in outcome.result.rejected:
        reasons.setdefault(events[rejected.index][0], rejected.error)
    done = [letter.id for letter in letters if letter.id not in reasons]
    for letter in letters:
        if letter.id in reasons:
            letter.reason = reasons[letter.id]
    if done:
        session.execute(delete(models.DeadLetter).where(models.DeadLetter.id.in_(done)))
    return Replayed(len(done), len(reasons), outcome.result.accepted)
