"""Storing a batch: events once by `(source, id)`, their flows, and the marks that name them.

Ids come in blocks: on PostgreSQL each `nextval` of the events' and the flows' sequences
(which step by ID_BLOCK) is the first id of a block no other writer is given, and a batch
numbers its rows from there. The ids of a batch's rows for one city then form ranges that
hold no other batch's rows, and a pending mark (`fabcity.rollups.pending`) names them by those
ranges. SQLite has one writer at a time, so its new ids follow each other anyway.

PostgreSQL stores with COPY: 100-128k rows/s here against 11-14k rows/s for SQLAlchemy's
insertmanyvalues with RETURNING (LIMITS.md). SQLite keeps the portable statements. Rows are
tuples in the columns' order, which psycopg's COPY writes without looking anything up.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import insert
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.db import is_postgres
from fabcity.core.sql import insert_ignore
from fabcity.flows.derive import DerivedFlow
from fabcity.ingest.origins import Origin
from schemas.fast import Read


@dataclass(slots=True)
class Ready:
    index: int
    key: tuple[str, str]  # (source, id): an event is stored once by it
    event: Read
    origin: Origin
    time: datetime
    day: date
    hour: int
    flows: list[DerivedFlow]
    row: tuple[Any, ...]  # the event's row after its id (EVENT_COLUMNS)
    pk: int = 0  # the event's id, once stored


# The columns of a flow row after its id, in the `flows` table's order.
FLOW_COLUMNS = ("event_pk", "city_id", "site_id", "device_id", "day", "hour", *DerivedFlow._fields)
# The columns of an event row after its id.
EVENT_COLUMNS = (
    "source", "event_id", "type", "time", "received_at", "city_id", "site_id", "device_id",
    "day", "hour", "payload",
)  # fmt: skip

# PostgreSQL's types of the columns COPYed, with the id first. COPY goes in binary, where the
# server reads each field in its column's own binary form: these must be the columns' types.
# Strings go as `text`, which is also the binary form of `varchar` and of `json`.
_FLOW_TYPES = (
    "int8", "int8", "int4", "int4", "int4", "date", "int4",
    "text", "text", "int8", "text", "text", "bool", "text", "text", "text", "text", "bool",
)  # fmt: skip
_EVENT_TYPES = (
    "int8", "text", "text", "text", "timestamptz", "timestamptz", "int4", "int4", "int4",
    "date", "int4", "text",
)  # fmt: skip
_FLOWS = ("flows", ("id", *FLOW_COLUMNS), _FLOW_TYPES)
_EVENTS = ("events", ("id", *EVENT_COLUMNS), _EVENT_TYPES)
FlowRow = tuple[Any, ...]


def flow_row(
    event_pk: int,
    city_id: int,
    site_id: int,
    device_id: int | None,
    day: date,
    hour: int,
    flow: DerivedFlow,
) -> FlowRow:
    """A flow's row, in FLOW_COLUMNS' order."""
    return (event_pk, city_id, site_id, device_id or 0, day, hour, *flow)


def store_flows(session: Session, rows: list[FlowRow]) -> None:
    """Store flows that no pending mark names (a rebuild's): ids in blocks on PostgreSQL."""
    if not is_postgres(session):
        session.execute(
            insert(models.Flow), [dict(zip(FLOW_COLUMNS, r, strict=True)) for r in rows]
        )
        return
    with _raw_connection(session).cursor() as cur:
        for start in range(0, len(rows), ID_BLOCK):
            part = rows[start : start + ID_BLOCK]
            (first,) = cur.execute("SELECT nextval('flows_id_seq')").fetchone()
            _copy_rows(cur, _FLOWS, [(pk, *row) for pk, row in enumerate(part, first)])


ID_BLOCK = 65536
Key = tuple[str, str]


def slices(items: list[Ready]) -> list[list[Ready]]:
    """The batch in parts of at most ID_BLOCK events and ID_BLOCK flows: one block each."""
    if len(items) <= ID_BLOCK and sum(len(i.flows) for i in items) <= ID_BLOCK:
        return [items]  # nearly always
    parts: list[list[Ready]] = [[]]
    flows = 0
    for item in items:
        if parts[-1] and (len(parts[-1]) == ID_BLOCK or flows + len(item.flows) > ID_BLOCK):
            parts.append([])
            flows = 0
        parts[-1].append(item)
        flows += len(item.flows)
    return parts


def store(
    session: Session, items: list[Ready], received_at: datetime
) -> tuple[list[Ready], list[dict[str, Any]]]:
    """Store the new events of `items` and their flows; returns those stored, with their
    ids set, and the pending marks that name them (one per city)."""
    if not is_postgres(session):
        inserted = _insert_events(session, [r.row for r in items])
        stored = _stored(items, inserted)
        flow_rows = _flow_rows(stored, 0)
        flow_ids: list[int] = []
        if flow_rows:
            statement = insert(models.Flow).returning(models.Flow.id, sort_by_parameter_order=True)
            params = [dict(zip(("id", *FLOW_COLUMNS), r, strict=True)) for r in flow_rows]
            for p in params:
                del p["id"]  # SQLite numbers them
            flow_ids = list(session.scalars(statement, params))
        return stored, _marks(stored, flow_rows, flow_ids)
    with _raw_connection(session).cursor() as cur:
        # The savepoint `_copy_events` may roll back to, and the ids, in one round trip.
        cur.execute(
            "SAVEPOINT fabcity_copy; SELECT nextval('events_id_seq'), nextval('flows_id_seq')"
        )
        cur.nextset()
        first_event, first_flow = cur.fetchone()
        rows = [(pk, *r.row) for pk, r in enumerate(items, first_event)]
        copied = _copy_events(cur, rows)
        if copied is None:  # all of them: the usual case
            for pk, r in enumerate(items, first_event):
                r.pk = pk
            stored = items
        else:
            stored = _stored(items, copied)
        flow_rows = _flow_rows(stored, first_flow)
        if flow_rows:
            _copy_rows(cur, _FLOWS, flow_rows)
    return stored, _marks(stored, flow_rows, [r[0] for r in flow_rows])


def _stored(items: list[Ready], inserted: dict[Key, int]) -> list[Ready]:
    """The items whose events were inserted, their ids set."""
    stored = []
    for item in items:
        pk = inserted.get(item.key)
        if pk is not None:
            item.pk = pk
            stored.append(item)
    return stored


def _flow_rows(stored: list[Ready], first: int) -> list[FlowRow]:
    """The rows of the stored events' flows, numbered from `first` (ids and all columns)."""
    rows: list[FlowRow] = []
    fid = first
    for item in stored:
        if item.flows:
            o = item.origin
            head = (item.pk, o.city_id, o.site_id, o.device_id or 0, item.day, item.hour)
            for f in item.flows:
                rows.append((fid, *head, *f))
                fid += 1
    return rows


def _marks(
    stored: list[Ready], flow_rows: list[FlowRow], flow_ids: list[int]
) -> list[dict[str, Any]]:
    """One mark per city: the range of its events' ids and of its flows' ids."""
    events = _spans((item.origin.city_id, item.pk) for item in stored)
    flows = _spans((row[2], pk) for row, pk in zip(flow_rows, flow_ids, strict=True))
    return [
        {"city_id": city, "event_lo": lo, "event_hi": hi,
         "flow_lo": flows[city][0] if city in flows else None,
         "flow_hi": flows[city][1] if city in flows else None}
        for city, (lo, hi) in events.items()
    ]  # fmt: skip


def _spans(ids: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """The lowest and highest id of each city, from (city, id) pairs."""
    spans: dict[int, list[int]] = {}
    for city, pk in ids:
        span = spans.get(city)
        if span is None:
            spans[city] = [pk, pk]
        elif pk < span[0]:
            span[0] = pk
        elif pk > span[1]:
            span[1] = pk
    return spans


def _insert_events(session: Session, rows: list[tuple[Any, ...]]) -> dict[Key, int]:
    statement = insert_ignore(session, models.Event, ["source", "event_id"]).returning(
        models.Event.id, models.Event.source, models.Event.event_id
    )
    params = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]
    for p in params:
        p["payload"] = orjson.loads(p["payload"])  # the JSON column takes the value
    return {(s, e): pk for pk, s, e in session.execute(statement, params)}


def _raw_connection(session: Session) -> Any:
    """The psycopg connection under the session, inside the session's transaction."""
    return session.connection().connection.driver_connection


Table = tuple[str, tuple[str, ...], tuple[str, ...]]  # name, columns, their types


# Rows per COPY statement. PostgreSQL's backend spent 0.7 us less per row (events and flows
# alike) COPYing 1,000 rows in two or four statements than in one: making and dropping a slot
# for each row it buffers for a multi-row insert took 14 % of its time at 1,000 rows a
# statement (a profile of the backend). Draining MQTT into it, PostgreSQL's CPU per event was
# 10.2 us at 1,000, 9.4 at 500 and 10.1 at 250 (three rounds each, alternated): past two
# statements a batch, the round trips cost what the slots saved.
COPY_ROWS = 500


def _copy_rows(cur: Any, table: Table, rows: list[tuple[Any, ...]]) -> None:
    """COPY rows in the table's columns' order, in binary: psycopg then writes each value from
    its C form instead of formatting it as text (3 against 8 us per event and its flow here),
    and the server reads it without parsing. A JSON column's values come as JSON text."""
    name, columns, types = table
    statement = f"COPY {name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    for start in range(0, len(rows), COPY_ROWS):
        with cur.copy(statement) as copy:
            copy.set_types(types)
            write = copy.write_row
            for row in rows[start : start + COPY_ROWS]:
                write(row)


def _copy_events(cur: Any, rows: list[tuple[Any, ...]]) -> dict[Key, int] | None:
    """Store new events, skip repeats: the keys stored, with their ids, or None for all.
    The caller has just set the savepoint `fabcity_copy`.

    A batch is almost always all new, so it is COPYed straight into `events` (its ids drawn
    beforehand), inside a savepoint. If a key is already there (a redelivery) the savepoint is
    rolled back and the batch goes through a stage table and `INSERT … ON CONFLICT DO NOTHING`
    instead. Measured on PostgreSQL's side: 18.5 us per event for the straight COPY, 28 us
    through the stage."""
    try:
        _copy_rows(cur, _EVENTS, rows)
    except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
        # The ids drawn stay with the rows: the stage inserts the new ones with them.
        cur.execute("ROLLBACK TO SAVEPOINT fabcity_copy")
        return _stage_events(cur, rows)
    cur.execute("RELEASE SAVEPOINT fabcity_copy")
    return None


def _stage_events(cur: Any, rows: list[tuple[Any, ...]]) -> dict[Key, int]:
    _, columns, types = _EVENTS
    names = ", ".join(columns)
    # One stage per column set: it takes the events table's column types, rows vanish at
    # every commit (and with a rollback), and the table lives as long as the connection.
    stage = f"fabcity_stage_{zlib.crc32(names.encode()):08x}"
    cur.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS "
        f"AS SELECT {names} FROM events WITH NO DATA"
    )
    _copy_rows(cur, (stage, columns, types), rows)
    cur.execute(
        f"INSERT INTO events ({names}) SELECT {names} FROM {stage} "
        "ORDER BY city_id, source, event_id ON CONFLICT (source, event_id) DO NOTHING "
        "RETURNING id, source, event_id"
    )
    found = {(s, e): pk for pk, s, e in cur.fetchall()}
    # The stage lives on to the end of the transaction; a later batch in it must not see these.
    cur.execute(f"TRUNCATE {stage}")
    return found
