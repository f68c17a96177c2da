"""Webhook subscriptions: stored events and metric updates, out as CloudEvents.

An outbox without extra writes at ingest: each subscription keeps a cursor into the events
table (`events.id` of the last event delivered) and one into `notices` (metric updates). A
sender claims a due subscription with a lease, reads what lies past its cursors, posts it,
and advances the cursors only after the receiver said 2xx. A failure is logged in
`deliveries` and the subscription waits `backoff(failures)` before the next attempt, so the
receiver gets every event once and in order once it recovers (a sender that dies between the
2xx and the commit sends the run again: receivers dedupe on the CloudEvents `id`+`source`).

An event the receiver refuses (a 4xx other than 408 and 429) would be refused forever and hold
back everything behind it: after `PARK_AFTER` refusals in a row it is parked, logged as such,
and delivery goes on past it. A batch it refuses is sent again one event at a time, so that
only the refused event is parked. A metric-update notice waits until the events it reports
(those stored before it) are delivered.

Sending itself (HTTP) lives in `workers/`; this module decides what to send and records what
happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.db import get_or_not_found, is_postgres
from fabcity.registry import entries
from schemas import standards
from schemas.standards import METRICS_UPDATED, PARKED, SubscriptionIn

EVENTS = "events"
NOTICES = "notices"
NOTICE_SOURCE = "/fabcity/metrics"
# The last stored event when a notice was written: its events are those up to this one.
# Kept in the notice's data for ordering, and left out of what is delivered.
AFTER_EVENT = "after_event"
# Refusals in a row of one event before it is parked.
PARK_AFTER = 5
# 4xx answers that say "not now" rather than "never": retried like a 5xx, never parked.
_TRANSIENT = {408, 425, 429}


# Subscriptions -------------------------------------------------------------------------------


def create(
    session: Session, body: SubscriptionIn, now: datetime | None = None
) -> models.Subscription:
    city_id = entries.get_city(session, body.city).id if body.city else None
    start_events = 0
    start_notices = 0
    if not body.from_beginning:
        start_events = session.scalar(select(func.max(models.Event.id))) or 0
        start_notices = session.scalar(select(func.max(models.Notice.id))) or 0
    sub = models.Subscription(
        url=str(body.url),
        city_id=city_id,
        types=body.types,
        mode=body.mode,
        batch_size=body.batch_size,
        event_cursor=start_events,
        notice_cursor=start_notices,
        failures=0,
        created_at=now or datetime.now(UTC),
    )
    session.add(sub)
    session.flush()
    return sub


def get(session: Session, subscription_id: int) -> models.Subscription:
    return get_or_not_found(
        session,
        models.Subscription,
        subscription_id,
        f"no subscription {subscription_id}; list them at /v1/subscriptions",
    )


def list_all(session: Session) -> list[models.Subscription]:
    return list(session.scalars(select(models.Subscription).order_by(models.Subscription.id)))


def remove(session: Session, subscription_id: int) -> None:
    sub = get(session, subscription_id)
    # SQLite enforces ON DELETE CASCADE only with a pragma; say it explicitly for both.
    session.execute(
        delete(models.Delivery).where(models.Delivery.subscription_id == subscription_id)
    )
    session.delete(sub)
    session.flush()


def city_slugs(session: Session) -> dict[int, str]:
    return {c.id: c.slug for c in entries.list_cities(session)}


def describe(sub: models.Subscription, slugs: dict[int, str]) -> standards.Subscription:
    return standards.Subscription(
        id=sub.id,
        url=sub.url,
        city=slugs.get(sub.city_id) if sub.city_id is not None else None,
        types=sub.types,
        mode=sub.mode,
        batch_size=sub.batch_size,
        event_cursor=sub.event_cursor,
        failures=sub.failures,
        next_attempt_at=sub.next_attempt_at,
        created_at=sub.created_at,
    )


def deliveries(session: Session, subscription_id: int, limit: int = 100) -> list[models.Delivery]:
    get(session, subscription_id)
    return list(
        session.scalars(
            select(models.Delivery)
            .where(models.Delivery.subscription_id == subscription_id)
            .order_by(models.Delivery.id.desc())
            .limit(limit)
        )
    )


# Metric-update notices -----------------------------------------------------------------------


def announce_recomputed(
    session: Session, windows: Iterable[tuple[int, date]], now: datetime | None = None
) -> int:
    """Note that these (city, day) windows were recomputed, one notice per city, for the
    subscriptions that follow metric updates. Nothing is written when none does."""
    by_city: dict[int, set[date]] = {}
    for city_id, day in windows:
        by_city.setdefault(city_id, set()).add(day)
    if not by_city:
        return 0
    wanting = [
        s.city_id
        for s in session.scalars(select(models.Subscription))
        if not s.types or METRICS_UPDATED in s.types
    ]
    if not wanting:
        return 0
    everyone = None in wanting
    when = now or datetime.now(UTC)
    # The recomputation read no event past this one (the highest visible now): the notice is
    # delivered only after those events, so a receiver never hears of metrics before the
    # events they were made of.
    after = session.scalar(select(func.max(models.Event.id))) or 0
    rows = [
        {
            "city_id": city_id,
            "type": METRICS_UPDATED,
            "time": when,
            "data": {"days": [d.isoformat() for d in sorted(days)], AFTER_EVENT: after},
        }
        for city_id, days in sorted(by_city.items())
        if everyone or city_id in wanting
    ]
    if rows:
        session.execute(insert(models.Notice), rows)
    return len(rows)


# Delivery ------------------------------------------------------------------------------------


def backoff(failures: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after `failures` failed attempts in a row: base, 2 base, 4 base, …"""
    return float(min(cap_s, base_s * 2 ** max(0, failures - 1)))


def claim_due(session: Session, now: datetime, lease_s: float, limit: int = 100) -> list[int]:
    """Subscriptions due for delivery that no other sender holds, now leased to the caller.

    The conditional UPDATE is the lock: of two senders, one changes the row and the other
    sees zero rows changed, on SQLite and PostgreSQL alike.
    """
    free = or_(models.Subscription.leased_until.is_(None), models.Subscription.leased_until < now)
    due = or_(
        models.Subscription.next_attempt_at.is_(None), models.Subscription.next_attempt_at <= now
    )
    candidates = session.scalars(
        select(models.Subscription.id)
        .where(free, due)
        .order_by(models.Subscription.id)
        .limit(limit)
    ).all()
    claimed = []
    for sub_id in candidates:
        changed = session.execute(
            update(models.Subscription)
            .where(models.Subscription.id == sub_id, free)
            .values(leased_until=now + timedelta(seconds=lease_s))
        )
        if changed.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(sub_id)
    return claimed


@dataclass(frozen=True)
class Outgoing:
    """A run of events (or notices) past a subscription's cursor, as CloudEvents."""

    subscription_id: int
    url: str
    mode: str
    stream: str
    cursor: int
    ids: list[int]
    events: list[dict[str, Any]]


def pending(
    session: Session, subscription_id: int, now: datetime, settle_s: float
) -> Outgoing | None:
    """What the subscription should receive next: events first, then notices."""
    sub = session.get(models.Subscription, subscription_id)
    if sub is None:
        return None
    event_types = [t for t in sub.types if t != METRICS_UPDATED]
    wants_events = not sub.types or bool(event_types)
    if wants_events:
        query = (
            select(models.Event.id, models.Event.payload, models.Event.time)
            .where(models.Event.id > sub.event_cursor)
            .order_by(models.Event.id)
            .limit(_run_size(session, sub, EVENTS))
        )
        query = _owed(query, sub, event_types)
        if is_postgres(session) and settle_s > 0:
            # Ids come from a sequence, so a transaction can commit a lower id after a higher
            # one became visible; waiting until received events settle keeps the cursor from
            # passing over such a straggler. SQLite serialises writers: ids commit in order.
            query = query.where(models.Event.received_at <= now - timedelta(seconds=settle_s))
        rows = session.execute(query).all()
        if rows:
            return Outgoing(
                sub.id,
                sub.url,
                sub.mode,
                EVENTS,
                sub.event_cursor,
                [r.id for r in rows],
                [as_cloudevent(r.payload, r.time) for r in rows],
            )
    if not sub.types or METRICS_UPDATED in sub.types:
        nquery = (
            select(models.Notice, models.City.slug)
            .join(models.City, models.City.id == models.Notice.city_id)
            .where(models.Notice.id > sub.notice_cursor)
            .order_by(models.Notice.id)
            .limit(_run_size(session, sub, NOTICES))
        )
        if sub.city_id is not None:
            nquery = nquery.where(models.Notice.city_id == sub.city_id)
        notices = list(session.execute(nquery).tuples().all())
        if wants_events and notices:
            # Events still owed (settling, or not yet sent) come before the notices that
            # report them: only the notices written before the first of them go now.
            owed = session.scalar(
                _owed(
                    select(func.min(models.Event.id)).where(models.Event.id > sub.event_cursor),
                    sub,
                    event_types,
                )
            )
            if owed is not None:
                ready = 0
                while ready < len(notices) and _after(notices[ready][0]) < owed:
                    ready += 1
                notices = notices[:ready]
        if notices:
            return Outgoing(
                sub.id,
                sub.url,
                sub.mode,
                NOTICES,
                sub.notice_cursor,
                [n.id for n, _ in notices],
                [notice_cloudevent(n, slug) for n, slug in notices],
            )
    return None


def _owed(query: Any, sub: models.Subscription, event_types: list[str]) -> Any:
    """`query` of events narrowed to those the subscription follows."""
    if sub.city_id is not None:
        query = query.where(models.Event.city_id == sub.city_id)
    if event_types:
        query = query.where(models.Event.type.in_(event_types))
    return query


def _after(notice: models.Notice) -> int:
    after = notice.data.get(AFTER_EVENT, 0)
    return after if isinstance(after, int) else 0


def _run_size(session: Session, sub: models.Subscription, stream: str) -> int:
    """How many to send in the next run: one at a time while a batch that the receiver
    refused is not yet behind the cursor, so that what it refuses is found and parked alone
    and the rest is delivered."""
    if sub.mode == "batch" and _refused_ahead(session, sub, stream):
        return 1
    return sub.batch_size


def _refused_ahead(session: Session, sub: models.Subscription, stream: str) -> bool:
    last = session.execute(
        select(models.Delivery.last_id, models.Delivery.status_code, models.Delivery.error)
        .where(
            models.Delivery.subscription_id == sub.id,
            models.Delivery.stream == stream,
            models.Delivery.ok.is_(False),
        )
        .order_by(models.Delivery.id.desc())
        .limit(1)
    ).first()
    if last is None or not refused(last.status_code) or (last.error or "").startswith(PARKED):
        return False
    cursor = sub.event_cursor if stream == EVENTS else sub.notice_cursor
    return bool(last.last_id > cursor)


def refused(status_code: int | None) -> bool:
    """Whether the receiver said it will never take what was sent (a 4xx but "not now")."""
    return status_code is not None and 400 <= status_code < 500 and status_code not in _TRANSIENT


def as_cloudevent(payload: dict[str, Any], time: datetime) -> dict[str, Any]:
    """A stored event as it was received, with `time` filled in when the sender left it out
    (the platform used the receive time)."""
    if payload.get("time"):
        return payload
    return {**payload, "time": _rfc3339(time)}


def notice_cloudevent(notice: models.Notice, city: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"notice-{notice.id}",
        "source": f"{NOTICE_SOURCE}/{city}",
        "type": notice.type,
        "time": _rfc3339(notice.time),
        "subject": city,
        "datacontenttype": "application/json",
        "data": {"city": city, **{k: v for k, v in notice.data.items() if k != AFTER_EVENT}},
    }


def _rfc3339(when: datetime) -> str:
    return when.isoformat()  # stored times come back aware (`UtcDateTime`)


@dataclass(frozen=True)
class Attempt:
    """How a POST went: `sent` events reached the receiver (all, unless it failed midway)."""

    sent: int
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


def record(
    session: Session,
    out: Outgoing,
    attempt: Attempt,
    now: datetime,
    backoff_s: float,
    backoff_max_s: float,
    lease_s: float,
) -> None:
    """Log the attempt; advance the cursor past what was delivered; on failure, back off."""
    sub = session.get(models.Subscription, out.subscription_id)
    if sub is None:  # deleted while we were sending
        return
    cursor_column = "event_cursor" if out.stream == EVENTS else "notice_cursor"
    if attempt.sent:
        delivered = out.ids[: attempt.sent]
        session.add(
            _delivery(
                sub, out, attempt, now, delivered, True, attempt.status_code if attempt.ok else None
            )
        )
        # Only from the cursor this run was read at: a sender whose lease ran out must not
        # move back a cursor that another sender has moved on.
        if getattr(sub, cursor_column) == out.cursor:
            setattr(sub, cursor_column, delivered[-1])
    if attempt.ok:
        sub.failures = 0
        sub.next_attempt_at = None
        sub.leased_until = now + timedelta(seconds=lease_s)
    else:
        failed = out.ids[attempt.sent :]
        # One at a time in single mode: the failure is the first id's alone.
        tried = failed if out.mode == "batch" else failed[:1]
        error = (attempt.error or "")[:2000] or None
        if _to_park(session, sub, out.stream, tried, attempt.status_code):
            parked = f"{PARKED} after {PARK_AFTER} refusals in a row: {error or 'refused'}"
            session.add(
                _delivery(sub, out, attempt, now, tried, False, attempt.status_code, parked)
            )
            # As above: only from where this sender left it.
            reached = out.ids[attempt.sent - 1] if attempt.sent else out.cursor
            if getattr(sub, cursor_column) == reached:
                setattr(sub, cursor_column, tried[0])
            # Due again at once, for the next sweep: what follows the parked event is owed.
            sub.failures = 0
            sub.next_attempt_at = None
            sub.leased_until = None
            session.flush()
            return
        session.add(_delivery(sub, out, attempt, now, tried, False, attempt.status_code, error))
        sub.failures += 1
        sub.next_attempt_at = now + timedelta(
            seconds=backoff(sub.failures, backoff_s, backoff_max_s)
        )
        sub.leased_until = None
    session.flush()


def _to_park(
    session: Session,
    sub: models.Subscription,
    stream: str,
    tried: list[int],
    status_code: int | None,
) -> bool:
    """Whether this refusal of one event is its `PARK_AFTER`th in a row."""
    if len(tried) != 1 or not refused(status_code) or sub.failures < PARK_AFTER - 1:
        return False
    before = session.execute(
        select(models.Delivery.ok, models.Delivery.status_code, models.Delivery.first_id)
        .where(models.Delivery.subscription_id == sub.id, models.Delivery.stream == stream)
        .order_by(models.Delivery.id.desc())
        .limit(PARK_AFTER - 1)
    ).all()
    return len(before) == PARK_AFTER - 1 and all(
        not row.ok and refused(row.status_code) and row.first_id == tried[0] for row in before
    )


def _delivery(
    sub: models.Subscription,
    out: Outgoing,
    attempt: Attempt,
    now: datetime,
    ids: list[int],
    ok: bool,
    status_code: int | None,
    error: str | None = None,
) -> models.Delivery:
    """The delivery log's row for the ids an attempt delivered, or failed to (`error`)."""
    return models.Delivery(
        subscription_id=sub.id,
        attempted_at=now,
        stream=out.stream,
        first_id=ids[0],
        last_id=ids[-1],
        count=len(ids),
        attempt=sub.failures + 1,
        status_code=status_code,
        ok=ok,
        error=error,
        duration_ms=attempt.duration_ms,
    )


def release(session: Session, subscription_id: int) -> None:
    session.execute(
        update(models.Subscription)
        .where(models.Subscription.id == subscription_id)
        .values(leased_until=None)
    )


def prune_notices(session: Session) -> int:
    """Drop notices every subscription has passed; returns how many."""
    lowest = session.scalar(select(func.min(models.Subscription.notice_cursor)))
    query = delete(models.Notice)
    if lowest is not None:
        query = query.where(models.Notice.id <= lowest)
    result = session.execute(query)
    return int(result.rowcount)  # type: ignore[attr-defined]
