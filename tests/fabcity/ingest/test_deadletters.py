"""Dead-letter rows: one constructor for every path, and a row PostgreSQL always takes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters.base import Message
from fabcity.core.db import transaction
from fabcity.core.models import DeadLetter, Event
from fabcity.ingest.deadletters import TOPIC_MAX_CHARS, dead_letter
from fabcity.ingest.intake import store
from fabcity.registry import entries
from schemas import api
from tests.support.city import CITY, SITE, register

# The longest topic MQTT can carry (a UTF-8 string of at most 65,535 bytes), far longer
# than the column.
LONGEST_MQTT_TOPIC_CHARS = 65_535
RECEIVED = datetime(2026, 1, 2, 11, 0, tzinfo=UTC)


def test_the_topic_is_cut_to_the_column_and_everything_else_kept() -> None:
    topic = "t" * (TOPIC_MAX_CHARS + 1)
    letter = dead_letter(RECEIVED, "mqtt", topic, b"\x00payload", "why")
    assert letter.topic == topic[:TOPIC_MAX_CHARS]
    assert (letter.received_at, letter.channel, letter.payload, letter.reason) == (
        RECEIVED,
        "mqtt",
        b"\x00payload",
        "why",
    )
    assert dead_letter(RECEIVED, "mqtt", "short/topic", b"", "why").topic == "short/topic"


def test_a_device_message_on_an_overlong_topic_is_dead_lettered_and_its_batch_stored(
    factory: sessionmaker[Session],
) -> None:
    # On PostgreSQL a topic longer than the column would fail the whole transaction.
    register(factory)
    with transaction(factory) as s:
        site = entries.get_site(s, entries.get_city(s, CITY), SITE)
        body = api.DeviceIn(
            slug="mk3", name="mk3", adapter="octoprint", settings={"base_topic": "lab/octo"}
        )
        entries.create_device(s, site, body)
    done = {"time": 60.0, "_event": "PrintDone", "_timestamp": 1767354324}
    printed = Message("lab/octo/event/PrintDone", orjson.dumps(done), RECEIVED)
    overlong = "lab/" + "x" * (LONGEST_MQTT_TOPIC_CHARS - len("lab/"))
    lost = Message(overlong, b'{"anything": 1}', RECEIVED)

    # One transaction, as a device lane commits a batch: the long topic must not fail it.
    with transaction(factory) as s:
        outcome = store(s, [lost, printed])
    assert outcome.result.accepted == 1
    assert [m for m, _ in outcome.dead] == [lost]

    with transaction(factory) as s:
        letter = s.scalars(select(DeadLetter)).one()
        events = s.scalar(select(func.count()).select_from(Event))
    assert letter.topic == overlong[:TOPIC_MAX_CHARS]
    assert letter.payload == b'{"anything": 1}'
    assert letter.channel == "mqtt"
    assert "no registered device" in letter.reason
    assert events == 1
