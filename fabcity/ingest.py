"""The one ingest path, shared by HTTP and MQTT.

validate ▶ resolve the source ▶ derive flows (units converted) ▶ store the event once by
`(source, id)` ▶ store its flows ▶ mark its window dirty. The caller owns the transaction and
acknowledges only after it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.orm import Session

from fabcity import models, registry, windows
from fabcity.errors import Invalid
from fabcity.flows import DerivedFlow, ResourceInfo, derive
from fabcity.sql import insert_ignore
from schemas.api import IngestResult, Rejected
from schemas.events import CloudEvent


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line that says where and what, for a person to fix."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


@dataclass
class _Ready:
    index: int
    event: CloudEvent
    raw: dict[str, Any]
    origin: registry.Origin
    time: datetime
    day: date
    flows: list[DerivedFlow]


@dataclass
class IngestOutcome:
    result: IngestResult
    windows_marked: int = 0
    stored_indexes: list[int] = field(default_factory=list)


def prepare(
    items: Sequence[Any],
    session: Session,
    received_at: datetime,
) -> tuple[list[_Ready], list[Rejected]]:
    """Validate and normalise; nothing is written."""
    resolver = registry.OriginResolver(session)
    resources: dict[str, ResourceInfo] = dict(registry.resources(session))
    zones: dict[str, ZoneInfo] = {}
    ready: list[_Ready] = []
    rejected: list[Rejected] = []
    for index, raw in enumerate(items):
        try:
            if not isinstance(raw, dict):
                raise Invalid("an event must be a JSON object")
            try:
                event = CloudEvent.model_validate(raw)
            except ValidationError as exc:
                raise Invalid(describe(exc)) from exc
            origin = resolver.resolve(event.source)
            flows = derive(event, resources, origin.device_id)
        except Invalid as exc:
            rejected.append(Rejected(index=index, error=exc.detail))
            continue
        when = (event.time or received_at).astimezone(UTC)
        zone = zones.setdefault(origin.timezone, ZoneInfo(origin.timezone))
        ready.append(_Ready(index, event, raw, origin, when, when.astimezone(zone).date(), flows))
    return ready, rejected


def ingest(
    session: Session, items: Sequence[Any], received_at: datetime | None = None
) -> IngestOutcome:
    """Store the good events of `items` once each; report duplicates and refusals by index."""
    received_at = received_at or datetime.now(UTC)
    ready, rejected = prepare(items, session, received_at)

    # A repeat inside one batch is a duplicate as much as a repeat of a stored event.
    unique: dict[tuple[str, str], _Ready] = {}
    for item in ready:
        unique.setdefault((item.event.source, item.event.id), item)

    stored: list[_Ready] = []
    if unique:
        rows = [
            {
                "source": r.event.source,
                "event_id": r.event.id,
                "type": r.event.type.value,
                "time": r.time,
                "received_at": received_at,
                "city_id": r.origin.city_id,
                "site_id": r.origin.site_id,
                "device_id": r.origin.device_id,
                "day": r.day,
                "payload": r.raw,
            }
            for r in unique.values()
        ]
        statement = insert_ignore(session, models.Event, ["source", "event_id"]).returning(
            models.Event.id, models.Event.source, models.Event.event_id
        )
        inserted = {(s, e): pk for pk, s, e in session.execute(statement, rows)}
        flow_rows: list[dict[str, Any]] = []
        for key, item in unique.items():
            pk = inserted.get(key)
            if pk is None:
                continue
            stored.append(item)
            flow_rows.extend(
                {
                    "event_pk": pk,
                    "city_id": item.origin.city_id,
                    "site_id": item.origin.site_id,
                    "day": item.day,
                    **vars(f),
                }
                for f in item.flows
            )
        if flow_rows:
            session.execute(insert(models.Flow), flow_rows)
        windows.mark_dirty(session, ((r.origin.city_id, r.day) for r in stored))

    result = IngestResult(
        accepted=len(stored),
        duplicates=len(ready) - len(stored),
        rejected=rejected,
    )
    marked = len({(r.origin.city_id, r.day) for r in stored})
    return IngestOutcome(result, marked, sorted(r.index for r in stored))
