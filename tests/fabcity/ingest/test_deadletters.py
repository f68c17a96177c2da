"""Dead-letter rows: one constructor for every path, and a row PostgreSQL always takes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
from alembic import command
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters.base import Message
from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter, Event
from fabcity.ingest.deadletters import (
    CUT,
    OVER_CITY,
    OVER_DEVICE,
    OVER_TOTAL,
    PROPERTIES_MAX_CHARS,
    REPEAT,
    TOPIC_MAX_CHARS,
    Budget,
    Keeper,
    Kept,
    Quota,
    dead_letter,
)
from fabcity.ingest.intake import store
from fabcity.ingest.replay import replay
from fabcity.migrations import upgrade
from fabcity.registry import entries
from schemas import api
from tests.support.city import CITY, DEVICE, SITE, register

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


# Bounded: a prefix, no repeats, a quota ------------------------------------------------------

NATIVE = "fabcity/v1"


def test_a_letter_keeps_a_prefix_with_the_size_and_hash_of_the_whole() -> None:
    payload = b"x" * 1000
    letter = dead_letter(RECEIVED, "mqtt", "t", payload, "why", kept_bytes=10)
    assert letter.payload == b"x" * 10
    assert letter.payload_size == 1000
    assert letter.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert letter.truncated
    assert not dead_letter(RECEIVED, "mqtt", "t", b"short", "why", kept_bytes=10).truncated


def test_a_letter_made_with_its_whole_payload_gets_its_size_and_hash(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as s:
        s.add(
            DeadLetter(received_at=RECEIVED, channel="mqtt", topic="t", payload=b"abc", reason="r")
        )
    with transaction(factory) as s:
        letter = s.scalars(select(DeadLetter)).one()
        assert (letter.payload_size, letter.payload_sha256) == (
            3,
            hashlib.sha256(b"abc").hexdigest(),
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def quota(clock: Clock, device: Budget, city: Budget, total: Budget) -> Quota:
    return Quota(NATIVE, 3600, device, city, total, clock)


def test_the_quota_holds_per_device_per_city_and_in_all_and_renews_each_period() -> None:
    clock = Clock()
    q = quota(clock, Budget(2, 100), Budget(3, 1000), Budget(4, 10_000))
    a, b, c = (f"{NATIVE}/rome/lab/{d}/events" for d in "abc")
    assert q.take(a, 10)[0] is None
    assert q.take(a, 10)[0] is None
    assert q.take(a, 10)[0] == OVER_DEVICE  # its third letter
    assert q.take(b, 200)[0] == OVER_DEVICE  # more bytes than a device may keep
    assert q.take(b, 10)[0] is None
    assert q.take(c, 10)[0] == OVER_CITY  # rome's fourth letter
    assert q.take(f"{NATIVE}/oslo/lab/a/events", 10)[0] is None
    assert q.take(f"{NATIVE}/made-up/lab/a/events", 10)[0] == OVER_TOTAL
    clock.now += 3600
    assert q.take(a, 10)[0] is None


def test_topics_outside_the_native_tree_share_one_city_budget() -> None:
    q = quota(Clock(), Budget(5, 100), Budget(2, 1000), Budget(100, 10_000))
    assert q.take("tele/one/SENSOR", 1)[0] is None
    assert q.take("tele/two/SENSOR", 1)[0] is None
    assert q.take("tele/three/SENSOR", 1)[0] == OVER_CITY
    # A malformed native topic counts against the city its first level names.
    assert q.keys(f"{NATIVE}/rome//x/events")[1] == ("city", "rome")


def test_a_failed_batch_gives_its_charges_back() -> None:
    q = quota(Clock(), Budget(1, 100), Budget(10, 1000), Budget(10, 10_000))
    topic = f"{NATIVE}/rome/lab/a/events"
    outcome, charge = q.take(topic, 10)
    assert outcome is None
    kept = Kept(charges=[charge])
    q.give_back(kept)
    assert q.take(topic, 10)[0] is None


def test_a_repeat_of_a_kept_letter_is_not_stored_again_and_the_quota_is_not_charged(
    factory: sessionmaker[Session],
) -> None:
    q = quota(Clock(), Budget(2, 1000), Budget(10, 1000), Budget(10, 10_000))
    keeper = Keeper(kept_bytes=4, quota=q)
    topic = f"{NATIVE}/rome/lab/a/events"
    same = Message(topic, b"{bad json", RECEIVED)
    with transaction(factory) as s:
        first = keeper.keep(s, "mqtt", [(same, "not JSON"), (same, "not JSON")])
    with transaction(factory) as s:  # the next batch, or the next start of the bridge
        again = keeper.keep(s, "mqtt", [(same, "not JSON")])
        other = keeper.keep(s, "mqtt", [(Message(topic, b"{other", RECEIVED), "not JSON")])
        over = keeper.keep(s, "mqtt", [(Message(topic, b"{third", RECEIVED), "not JSON")])
    assert first.outcomes == {CUT: 1, REPEAT: 1}
    assert again.outcomes == {REPEAT: 1}
    assert other.outcomes == {CUT: 1}
    assert over.outcomes == {OVER_DEVICE: 1}
    assert (first.stored_bytes, first.discarded_bytes) == (4, 5 + 9)
    with transaction(factory) as s:
        kept = s.scalars(select(DeadLetter).order_by(DeadLetter.id)).all()
        assert [(k.payload, k.payload_size) for k in kept] == [(b"{bad", 9), (b"{oth", 6)]


def test_a_letter_cut_short_is_not_replayed_and_says_why(factory: sessionmaker[Session]) -> None:
    register(factory)
    body = orjson.dumps(
        {"action": "consume", "resource": "filament", "quantity": 1, "unit": "kg", "ring": "city"}
    )
    topic = f"{NATIVE}/{CITY}/{SITE}/{DEVICE}/events"
    with transaction(factory) as s:
        # The same bytes twice: kept whole, and cut one byte short.
        s.add(dead_letter(RECEIVED, "mqtt", topic, body, "no device yet", len(body)))
        s.add(dead_letter(RECEIVED, "mqtt", topic, body, "payload too large", len(body) - 1))
    with transaction(factory) as s:
        done = replay(s, None, NATIVE)
        again = replay(s, None, NATIVE)
    assert (done.ingested, done.still_dead, done.cut, done.events) == (1, 1, 1, 1)
    assert (again.ingested, again.cut) == (0, 1)
    with transaction(factory) as s:
        letter = s.scalars(select(DeadLetter)).one()
    assert letter.truncated
    assert letter.reason == "payload too large"  # why it was refused stays as it was
    assert letter.replays == 2
    assert (letter.last_replay_outcome or "").startswith("only the first")
    assert "cannot be replayed" in (letter.last_replay_outcome or "")


def test_a_failed_replay_keeps_the_first_reason_and_its_own_outcome_apart(
    factory: sessionmaker[Session],
) -> None:
    register(factory)
    body = orjson.dumps(
        {"action": "consume", "resource": "filament", "quantity": 1, "unit": "kg", "ring": "city"}
    )
    topic = f"{NATIVE}/{CITY}/{SITE}/unknown-dev/events"
    with transaction(factory) as s:
        s.add(dead_letter(RECEIVED, "mqtt", topic, body, "refused when received"))
    with transaction(factory) as s:
        first = replay(s, None, NATIVE)
    with transaction(factory) as s:
        letter = s.scalars(select(DeadLetter)).one()
        first_at = letter.last_replay_at
    with transaction(factory) as s:
        replay(s, None, NATIVE)
    with transaction(factory) as s:
        letter = s.scalars(select(DeadLetter)).one()
    assert (first.ingested, first.still_dead) == (0, 1)
    assert letter.reason == "refused when received"
    assert letter.replays == 2
    assert "no device 'unknown-dev'" in (letter.last_replay_outcome or "")
    assert first_at is not None and letter.last_replay_at is not None
    assert letter.last_replay_at >= first_at


def test_letters_kept_before_the_bound_get_their_size_and_hash_when_migrated(db_url: str) -> None:
    config = upgrade.alembic_config(db_url)
    command.downgrade(config, "0009")
    payload = b"\xff\x00" + b"a whole payload, as it was kept" * 100
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO dead_letters (received_at, channel, topic, payload, reason) "
                    "VALUES (:at, 'mqtt', 't', :payload, 'why')"
                ),
                {"at": RECEIVED, "payload": payload},
            )
        command.upgrade(config, "heads")
        with transaction(make_sessionmaker(engine)) as s:
            letter = s.scalars(select(DeadLetter)).one()
            assert letter.payload == payload  # kept whole, as it was
            assert letter.payload_size == len(payload)
            assert letter.payload_sha256 == hashlib.sha256(payload).hexdigest()
    finally:
        engine.dispose()


def test_a_letter_keeps_its_mqtt_properties_unless_they_are_too_large() -> None:
    small = dead_letter(
        RECEIVED,
        "mqtt",
        "t/ce",
        b"{}",
        "no device",
        properties=[("ce_id", "1"), ("ce_id", "2")],
        content_type="application/json",
    )
    assert small.properties == [["ce_id", "1"], ["ce_id", "2"]]  # in order, repeats and all
    assert (small.content_type, small.reason) == ("application/json", "no device")
    huge = [("x", "y" * PROPERTIES_MAX_CHARS)]
    big = dead_letter(RECEIVED, "mqtt", "t/ce", b"{}", "no device", properties=huge)
    assert (big.properties, big.content_type) == (None, None)
    assert big.reason.startswith("no device; its MQTT properties")
