"""The storage engine under the ingest path: COPY on PostgreSQL, the stage for a batch with
repeats, and the binary form of each column COPYed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, transaction
from fabcity.core.models import Event, Flow
from fabcity.ingest import store
from fabcity.ingest.service import ingest
from tests.support.city import event, flow, register


def _one_stored(factory: sessionmaker[Session]) -> dict[str, Any]:
    """The test city registered, and one event (id "old", 1 kg) stored: a later batch's repeat."""
    register(factory)
    old = event([flow(quantity=1)], id="old")
    with transaction(factory) as s:
        ingest(s, [old])
    return old


def test_a_batch_with_some_repeats_stores_the_new_ones_with_their_flows(
    factory: sessionmaker[Session],
) -> None:
    # On PostgreSQL a batch is COPYed straight in; a repeat in it sends the batch through the
    # stage instead, and the new events' flows must still point at their own events.
    old = _one_stored(factory)
    new = [event([flow(quantity=n)], id=f"new-{n}") for n in (2, 3)]
    with transaction(factory) as s:
        mixed = ingest(s, [new[0], old, new[1]])
        # A second batch in the same transaction sees none of the first one's rows.
        later = ingest(s, [event([flow(quantity=4)], id="new-4"), old])
    assert (mixed.result.accepted, mixed.result.duplicates) == (2, 1)
    assert mixed.stored_indexes == [0, 2]
    assert (later.result.accepted, later.result.duplicates) == (1, 1)
    with transaction(factory) as s:
        linked = s.execute(
            select(Event.event_id, Flow.amount).join(Flow, Flow.event_pk == Event.id)
        ).all()
    assert sorted(linked) == [
        ("new-2", 2_000_000),
        ("new-3", 3_000_000),
        ("new-4", 4_000_000),
        ("old", 1_000_000),
    ]


def test_the_binary_copy_names_each_column_in_its_own_type(pg_url: str) -> None:
    # In binary COPY the server reads each field in its column's binary form; a migration that
    # changes a column's type must change the list too. A NULL field carries no data, so the
    # other tests would not notice a wrong type on a column they leave empty.
    binary_form = {
        "character varying": "text",
        "json": "text",
        "bigint": "int8",
        "integer": "int4",
        "boolean": "bool",
        "timestamp with time zone": "timestamptz",
    }
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        for name, columns, types in (store._EVENTS, store._FLOWS):
            found = dict(
                conn.execute(
                    select(text("attname"), text("format_type(atttypid, NULL)"))
                    .select_from(text("pg_attribute"))
                    .where(text(f"attrelid = '{name}'::regclass AND attnum > 0"))
                ).all()
            )
            assert sorted(columns) == sorted(c for c in found if c in columns)
            for column, declared in zip(columns, types, strict=True):
                assert binary_form.get(found[column], found[column]) == declared, column
    engine.dispose()


def test_a_repeat_in_a_later_copy_statement_undoes_the_earlier_ones(
    factory: sessionmaker[Session],
) -> None:
    # A batch longer than COPY_ROWS is COPYed in several statements; a repeat in the last one
    # must roll the first ones back too (one savepoint), and the stage store each event once.
    old = _one_stored(factory)
    n = 2 * store.COPY_ROWS + 3
    new = [event([flow(quantity=1)], id=f"new-{k}") for k in range(n)]
    with transaction(factory) as s:
        outcome = ingest(s, [*new, old])
    assert (outcome.result.accepted, outcome.result.duplicates) == (n, 1)
    with transaction(factory) as s:
        stored = s.execute(select(Event.event_id)).scalars().all()
        flows = s.execute(select(Flow.event_pk)).scalars().all()
    assert sorted(stored) == sorted(["old", *(f"new-{k}" for k in range(n))])
    assert len(flows) == n + 1 and len(set(flows)) == n + 1
