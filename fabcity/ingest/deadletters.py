"""Dead letters: what could not become an event, kept with its reason.

Every row is built here (`dead_letter`), whichever path refused the message, and read here by
operators; `fabcity.ingest.replay` runs them through the ingest path again.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from sqlalchemy import Select, String, select
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.db import get_or_not_found
from schemas.access import DeadLetterFilter

T = TypeVar("T")


def _topic_max_chars() -> int:
    kind = models.DeadLetter.__table__.c["topic"].type
    if not isinstance(kind, String) or kind.length is None:
        raise TypeError("dead_letters.topic must be a string column of bounded length")
    return kind.length


# Read from the column, so the cut follows the schema.
TOPIC_MAX_CHARS = _topic_max_chars()


def dead_letter(
    received_at: datetime, channel: str, topic: str, payload: bytes, reason: str
) -> models.DeadLetter:
    """The row for one refused message, for the caller to add to its transaction.

    MQTT allows topics of 64 KiB; longer than the column, a topic would fail the whole batch
    on PostgreSQL, and the broker would deliver the batch again and again. So the topic is cut
    to what the column holds; the payload is kept whole, as received.
    """
    return models.DeadLetter(
        received_at=received_at,
        channel=channel,
        topic=topic[:TOPIC_MAX_CHARS],
        payload=payload,
        reason=reason,
    )


# Reading dead letters -----------------------------------------------------------------------


def _matching(query: Select[T], wanted: DeadLetterFilter) -> Select[T]:
    """`query` narrowed to the dead letters a filter names."""
    letter = models.DeadLetter
    if wanted.topic_prefix is not None:
        # Escaped: topics may hold LIKE's `%` and `_`.
        query = query.where(letter.topic.startswith(wanted.topic_prefix, autoescape=True))
    if wanted.reason_contains is not None:
        query = query.where(letter.reason.contains(wanted.reason_contains, autoescape=True))
    if wanted.received_before is not None:
        query = query.where(letter.received_at < wanted.received_before)
    if wanted.received_after is not None:
        query = query.where(letter.received_at >= wanted.received_after)
    return query


def list_letters(
    session: Session, wanted: DeadLetterFilter, limit: int = 100, after_id: int = 0
) -> list[models.DeadLetter]:
    """Dead letters oldest first, a page at a time (`after_id`: the last id of a page)."""
    query = select(models.DeadLetter).where(models.DeadLetter.id > after_id)
    return list(
        session.scalars(_matching(query, wanted).order_by(models.DeadLetter.id).limit(limit))
    )


def get(session: Session, letter_id: int) -> models.DeadLetter:
    detail = f"no dead letter {letter_id}; list them at /v1/dead-letters"
    return get_or_not_found(session, models.DeadLetter, letter_id, detail)


def ids_matching(session: Session, wanted: DeadLetterFilter) -> list[int]:
    query = _matching(select(models.DeadLetter.id), wanted).order_by(models.DeadLetter.id)
    return list(session.scalars(query))
