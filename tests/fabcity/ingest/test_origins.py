"""Sources resolved against the registry, and kept across a writer's batches (`Known`) only
while the registry stands still: on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import City, Device, Event, Resource, Site
from fabcity.ingest.origins import Known
from fabcity.ingest.service import ingest
from fabcity.registry import entries
from schemas import api
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow, register

PRINTER = f"/{CITY}/{SITE}/{DEVICE}"
# 23:30 UTC: the 1st in UTC, the 2nd in Madrid.
LATE = "2026-03-01T23:30:00Z"


@contextmanager
def registry_reads(factory: sessionmaker[Session]) -> Iterator[list[str]]:
    """The statements that read the registry's tables, while the block runs."""
    seen: list[str] = []
    engine = factory.kw["bind"]

    def before(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        text = statement.lower()
        if any(
            f"from {t}" in text or f"join {t}" in text for t in ("cities", "devices", "resources")
        ):
            seen.append(statement)

    sa_event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sa_event.remove(engine, "before_cursor_execute", before)


def store(factory: sessionmaker[Session], known: Known, *events: dict[str, Any]) -> Any:
    with transaction(factory) as s:
        return ingest(s, list(events), known=known).result


def day_of(factory: sessionmaker[Session], event_id: str) -> date:
    with transaction(factory) as s:
        found = s.scalar(select(Event.day).where(Event.event_id == event_id))
    assert found is not None
    return found


def test_a_writer_reads_the_registry_once_while_it_stands_still(
    factory: sessionmaker[Session],
) -> None:
    register(factory)
    known = Known()
    with registry_reads(factory) as first:
        assert store(factory, known, event([flow()], id="a", source=PRINTER)).accepted == 1
    with registry_reads(factory) as later:
        for i in range(3):
            assert store(factory, known, event([flow()], id=f"b{i}", source=PRINTER)).accepted == 1
    assert first, "the first batch resolves its sources and reads the resources"
    assert later == []


def test_a_change_of_zone_is_followed_at_the_next_batch(factory: sessionmaker[Session]) -> None:
    register(factory, timezone="UTC")
    known = Known()
    store(factory, known, event([flow()], id="before", source=PRINTER, time=LATE))
    with transaction(factory) as s:
        s.execute(update(City).where(City.slug == CITY).values(timezone="Europe/Madrid"))
    store(factory, known, event([flow()], id="after", source=PRINTER, time=LATE))
    assert day_of(factory, "before") == date(2026, 3, 1)
    assert day_of(factory, "after") == date(2026, 3, 2)


def test_a_retired_device_is_refused_at_the_next_batch(factory: sessionmaker[Session]) -> None:
    register(factory)
    known = Known()
    assert store(factory, known, event([flow()], id="a", source=PRINTER)).accepted == 1
    with transaction(factory) as s:
        s.execute(update(Device).where(Device.slug == DEVICE).values(retired_at=datetime.now(UTC)))
    result = store(factory, known, event([flow()], id="b", source=PRINTER))
    assert result.accepted == 0
    assert "retired" in result.rejected[0].error


def test_a_deleted_site_is_refused_at_the_next_batch(factory: sessionmaker[Session]) -> None:
    # The registry deletes a site no event refers to (it retires the others); the row is
    # deleted here directly, after the writer has resolved and kept its source.
    register(factory)
    known = Known()
    hub = f"/{CITY}/{OTHER_SITE}"
    assert store(factory, known, event([flow()], id="a", source=hub)).accepted == 1
    with transaction(factory) as s:
        s.execute(delete(Site).where(Site.slug == OTHER_SITE))
    result = store(factory, known, event([flow()], id="b", source=hub))
    assert result.accepted == 0
    assert "no site 'hub'" in result.rejected[0].error


def test_a_new_resource_is_read_at_the_next_batch(factory: sessionmaker[Session]) -> None:
    register(factory)
    known = Known()
    store(factory, known, event([flow()], id="a", source=PRINTER))
    with transaction(factory) as s:
        before = len(known.current(s)[1])
        s.add(Resource(name="hemp-fibre", unit="kg", dimension="mass", secondary=False))
    with transaction(factory) as s:
        resources = known.current(s)[1]
    assert len(resources) == before + 1
    assert "hemp-fibre" in resources


def test_a_site_registered_after_a_refusal_is_found_at_the_next_batch(
    factory: sessionmaker[Session],
) -> None:
    # Registering a site raises no version: refusals are not kept, so it is looked up again.
    register(factory)
    known = Known()
    newcomer = f"/{CITY}/annex"
    refused = store(factory, known, event([flow()], id="a", source=newcomer))
    assert "no site 'annex'" in refused.rejected[0].error
    with transaction(factory) as s:
        city = entries.get_city(s, CITY)
        entries.create_site(s, city, api.SiteIn(slug="annex", name="Annex"))
    assert store(factory, known, event([flow()], id="a", source=newcomer)).accepted == 1
