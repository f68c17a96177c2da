"""Dead letters: what could not become an event, kept with its reason.

Every row is built here (`dead_letter`, `Keeper.keep`), whichever path refused the message,
and read here by operators; `fabcity.ingest.replay` runs them through the ingest path again.

A refused message costs disk, and whoever can publish decides how much. So a dead letter
keeps at most a prefix of the payload (with the whole payload's size and SHA-256); a message
refused again on the same topic with the same bytes (a retained message after each restart of
the bridge, a device repeating itself) is not stored again, since its replay would yield the
same events; and a `Quota` bounds what one process keeps per device, per city and in all.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol, TypeVar

from sqlalchemy import Select, String, select
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.db import get_or_not_found
from fabcity.ingest.topics import MAX_PAYLOAD_BYTES, is_native, source_of
from schemas.access import DeadLetter, DeadLetterFilter

T = TypeVar("T")


def _topic_max_chars() -> int:
    kind = models.DeadLetter.__table__.c["topic"].type
    if not isinstance(kind, String) or kind.length is None:
        raise TypeError("dead_letters.topic must be a string column of bounded length")
    return kind.length


# Read from the column, so the cut follows the schema.
TOPIC_MAX_CHARS = _topic_max_chars()


def as_text(text: str) -> str:
    """`text` as a text column holds it everywhere: PostgreSQL refuses NUL in text, and a NUL
    in a topic (which MQTT forbids, but a broker or a replay may pass on) or in a reason that
    quotes it would fail the whole batch, to be delivered again and again. Written `\\x00`."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def stored_topic(topic: str) -> str:
    """A topic as its letter keeps it: NUL written out, cut to what the column holds."""
    return as_text(topic)[:TOPIC_MAX_CHARS]


# Hashes looked up per query when looking for letters already kept (SQLite's bound parameters
# are limited).
LOOKUP_CHUNK = 500


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


# What a letter keeps of a message's MQTT 5 properties (names, values and content type, in
# characters). A binary-mode CloudEvent's attributes take a few hundred; beyond this they are
# not kept, and the reason says so (the broker's packet size is the only other bound).
PROPERTIES_MAX_CHARS = 16 * 1024


def properties_of(message: object) -> tuple[list[list[str]] | None, str | None]:
    """The MQTT 5 user properties (as [name, value] pairs, in order) and content type a
    received message carries, if it carries any (paho's on 5, nothing on 3.1.1 or HTTP)."""
    pairs = getattr(message, "properties", None) or ()
    content_type = getattr(message, "content_type", None)
    if isinstance(pairs, dict):
        pairs = pairs.items()
    kept = [[str(name), str(value)] for name, value in pairs]
    return kept or None, content_type


def dead_letter(
    received_at: datetime,
    channel: str,
    topic: str,
    payload: bytes,
    reason: str,
    kept_bytes: int = MAX_PAYLOAD_BYTES,
    properties: Sequence[Sequence[str]] | None = None,
    content_type: str | None = None,
) -> models.DeadLetter:
    """The row for one refused message, for the caller to add to its transaction.

    MQTT allows topics of 64 KiB; longer than the column, a topic would fail the whole batch
    on PostgreSQL, and the broker would deliver the batch again and again. So the topic is cut
    to what the column holds. The payload is cut to `kept_bytes`: the broker lets a device
    send hundreds of MiB a second, and a letter longer than any event could be is evidence,
    not something to replay, so its first bytes, size and SHA-256 say enough.

    `properties` and `content_type` are the PUBLISH's (MQTT 5): a replay needs them to read a
    binary-mode CloudEvent. Too large to keep, they are dropped and the reason says so.
    """
    pairs = [[as_text(str(n)), as_text(str(v))] for n, v in properties or ()]
    size = sum(len(n) + len(v) for n, v in pairs) + len(content_type or "")
    if size > PROPERTIES_MAX_CHARS:
        reason = (
            f"{reason}; its MQTT properties ({size} characters) were too large to keep, "
            f"at most {PROPERTIES_MAX_CHARS}"
        )
        pairs, content_type = [], None
    return models.DeadLetter(
        received_at=received_at,
        channel=channel,
        topic=stored_topic(topic),
        payload=payload[:kept_bytes],
        payload_size=len(payload),
        payload_sha256=digest(payload),
        reason=as_text(reason),
        properties=pairs or None,
        content_type=None if content_type is None else as_text(content_type),
    )


def not_replayable(letter: models.DeadLetter) -> str | None:
    """Why a letter cannot be replayed (its payload was cut), or None."""
    if not letter.truncated:
        return None
    return (
        f"only the first {len(letter.payload)} of its {letter.payload_size} bytes were kept "
        f"(SHA-256 {letter.payload_sha256}); a payload cut short cannot be replayed"
    )


# What a process keeps -------------------------------------------------------------------------


class Incoming(Protocol):
    """A received message as the bridge (or a poller) holds it: what a letter is kept of."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def received_at(self) -> datetime: ...


@dataclass(frozen=True)
class Budget:
    letters: int
    bytes: int


# What became of a refused message: a row (`kept`, `cut`), or none (the rest). A fixed set:
# they label a metric, whose cardinality must not follow what senders choose.
KEPT = "kept"
CUT = "cut"  # kept, its payload cut to the prefix
REPEAT = "repeat"  # the same topic and bytes are already kept
OVER_DEVICE = "over_device_quota"
OVER_CITY = "over_city_quota"
OVER_TOTAL = "over_total_quota"
OUTCOMES = (KEPT, CUT, REPEAT, OVER_DEVICE, OVER_CITY, OVER_TOTAL)

_Key = tuple[str, str]  # (the budget's kind, whose)


class Charge(NamedTuple):
    """One letter's bytes charged to its budgets in one period."""

    period: int
    keys: tuple[_Key, ...]
    size: int


@dataclass
class Kept:
    """What `Keeper.keep` did with a batch's refused messages."""

    outcomes: dict[str, int] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)  # indexes of the refused that became rows
    stored_bytes: int = 0  # payload bytes written
    discarded_bytes: int = 0  # payload bytes received and not written
    # What the quota was charged, to give back if the transaction fails.
    charges: list[Charge] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class Quota:
    """Dead letters kept per device, per city and in all, per period, counted in memory.

    In memory, per process: checked for every refused message of every batch, it must cost
    nothing next to the transaction, and a bound per process is a bound in all (times the
    number of bridges). A restart starts a new period. The counters are dropped at each new
    period, and a key is only added for a letter kept, so they hold at most the total budget's
    number of keys.

    A native topic's device is `{city}/{site}/{device}` and its city `{city}`; any other
    topic (a device adapter's) is its own device, and all of them share one city budget. The
    names in a topic are the sender's choice: the total budget bounds a sender who makes up
    new ones.
    """

    def __init__(
        self,
        native_prefix: str,
        period_s: float,
        device: Budget,
        city: Budget,
        total: Budget,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.native_prefix = native_prefix
        self.period_s = period_s
        self.budgets = {"device": device, "city": city, "total": total}
        self._clock = clock
        self._lock = threading.Lock()
        self._period = -1
        self._used: dict[_Key, list[int]] = {}  # key: [letters, bytes]

    def keys(self, topic: str) -> tuple[_Key, _Key, _Key]:
        """The device, city and total budgets a topic's letters are charged to."""
        total: _Key = ("total", "")
        source = source_of(topic, self.native_prefix)
        if source is not None:
            return ("device", source), ("city", source.split("/")[1]), total
        device: _Key = ("device", topic[:TOPIC_MAX_CHARS])
        if is_native(topic, self.native_prefix):
            # A malformed native topic: its first level is all there is of a city.
            city = topic[len(self.native_prefix.rstrip("/")) + 1 :].split("/")[0]
            return device, ("city", city[:TOPIC_MAX_CHARS]), total
        return device, ("city", ""), total

    def take(self, topic: str, size: int) -> tuple[str | None, Charge]:
        """Charge one letter of `size` bytes to its topic's budgets: (None, the charge) if
        all of them hold it, else (the outcome naming the first one that does not, an empty
        charge)."""
        keys = self.keys(topic)
        with self._lock:
            period = int(self._clock() // self.period_s)
            if period != self._period:
                self._period = period
                self._used = {}
            for key, over in zip(keys, (OVER_DEVICE, OVER_CITY, OVER_TOTAL), strict=True):
                letters, used = self._used.get(key, (0, 0))
                budget = self.budgets[key[0]]
                if letters + 1 > budget.letters or used + size > budget.bytes:
                    return over, Charge(period, (), 0)
            for key in keys:
                counts = self._used.setdefault(key, [0, 0])
                counts[0] += 1
                counts[1] += size
            return None, Charge(period, keys, size)

    def give_back(self, kept: Kept) -> None:
        """Undo a batch's charges: its transaction failed, and the batch will come again."""
        with self._lock:
            for charge in kept.charges:
                if charge.period != self._period:
                    continue  # that period's counters are gone
                for key in charge.keys:
                    counts = self._used.get(key)
                    if counts is not None:
                        counts[0] -= 1
                        counts[1] -= charge.size
            kept.charges.clear()


class Keeper:
    """Turns a batch's refused messages into rows: the payload cut to `kept_bytes`, a repeat
    of a letter already kept not stored again, and, with a quota, no more than it allows."""

    def __init__(self, kept_bytes: int = MAX_PAYLOAD_BYTES, quota: Quota | None = None) -> None:
        self.kept_bytes = kept_bytes
        self.quota = quota

    def keep(self, session: Session, channel: str, refused: Sequence[tuple[Incoming, str]]) -> Kept:
        """Add the rows to the caller's transaction; what was not kept is not stored at all
        and is only counted (the caller still acknowledges it: it could never become an
        event, and the broker would only deliver it again)."""
        kept = Kept()
        if not refused:
            return kept
        digests = [digest(m.payload) for m, _ in refused]
        seen = _already_kept(session, set(digests))
        for index, ((message, reason), sha) in enumerate(zip(refused, digests, strict=True)):
            topic = stored_topic(message.topic)
            size = len(message.payload)
            stored = min(size, self.kept_bytes)
            if (topic, sha) in seen:
                outcome: str | None = REPEAT
            elif self.quota is not None:
                outcome, charge = self.quota.take(message.topic, stored)
                if outcome is None:
                    kept.charges.append(charge)
            else:
                outcome = None
            if outcome is not None:
                kept.count(outcome)
                kept.discarded_bytes += size
                continue
            seen.add((topic, sha))
            row = dead_letter(
                message.received_at,
                channel,
                message.topic,
                message.payload,
                reason,
                self.kept_bytes,
                *properties_of(message),
            )
            session.add(row)
            kept.rows.append(index)
            kept.count(CUT if stored < size else KEPT)
            kept.stored_bytes += stored
            kept.discarded_bytes += size - stored
        return kept

    def give_back(self, kept: Kept) -> None:
        if self.quota is not None:
            self.quota.give_back(kept)


def _already_kept(session: Session, digests: set[str]) -> set[tuple[str | None, str]]:
    """(topic, SHA-256) of the letters already kept among these digests."""
    found: set[tuple[str | None, str]] = set()
    wanted = sorted(digests)
    letter = models.DeadLetter
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        query = select(letter.topic, letter.payload_sha256).where(letter.payload_sha256.in_(chunk))
        found.update((topic, sha) for topic, sha in session.execute(query))
    return found


# Reading dead letters -----------------------------------------------------------------------


def _matching(query: Select[T], wanted: DeadLetterFilter) -> Select[T]:
    """`query` narrowed to the dead letters a filter names."""
    letter = models.DeadLetter
    if wanted.topic_prefix is not None:
        # Escaped: topics may hold LIKE's `%` and `_`.
        query = query.where(letter.topic.startswith(as_text(wanted.topic_prefix), autoescape=True))
    if wanted.reason_contains is not None:
        query = query.where(
            letter.reason.contains(as_text(wanted.reason_contains), autoescape=True)
        )
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


def described(letter: models.DeadLetter) -> DeadLetter:
    """A letter as the API and `fabcity deadletters list --json` show it: without its payload,
    with its size, digest and replays."""
    return DeadLetter(
        id=letter.id,
        received_at=letter.received_at,
        channel=letter.channel,
        topic=letter.topic,
        reason=letter.reason,
        size=letter.payload_size,
        sha256=letter.payload_sha256,
        kept=len(letter.payload),
        truncated=letter.truncated,
        content_type=letter.content_type,
        properties=[(str(k), str(v)) for k, v in letter.properties or ()],
        replays=letter.replays or 0,
        last_replay_at=letter.last_replay_at,
        last_replay_outcome=letter.last_replay_outcome,
    )
