"""Malformed MQTT messages through the bridge's real writer path (`Bridge._commit`: parse, ingest,
dead-letter, commit) on SQLite: nothing escapes, and each message is stored, a duplicate, or
dead-lettered with a reason. At least 10,000 messages (`FABCITY_FUZZ_BATCHES` batches of up to
40, 600 by default)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.core.models import DeadLetter, Event
from fabcity.migrations import upgrade
from services.mqtt.bridge import Bridge, Received
from tests.conftest import settings_for
from tests.support.city import CITY, DEVICE, SITE, register
from workers.dispatch import NoDispatch

BATCHES = int(os.environ.get("FABCITY_FUZZ_BATCHES", "600"))
SEEN = {"messages": 0}

# What JSON encoders (orjson) and decoders agree on: 64-bit integers.
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
json_leaf = st.none() | st.booleans() | int64 | st.floats(allow_nan=False) | st.text(max_size=20)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ("action", "resource", "quantity", "unit", "ring", "material", "fate", "design")
flow = st.fixed_dictionaries(
    {
        "action": st.sampled_from(["consume", "produce", "discard", "use", "fly", ""]),
        "resource": st.sampled_from(["filament", "wood", "electricity", "part", "unobtainium"]),
        "quantity": st.one_of(st.floats(allow_nan=False), int64, st.text(max_size=5)),
        "unit": st.sampled_from(["kg", "g", "kWh", "count", "h", "furlong", ""]),
        "ring": st.sampled_from(["site", "cell", "city", "region", "beyond", "moon"]),
    },
    optional={name: json_value for name in FIELDS[5:]},
)


def _event(prefix_source: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "specversion": st.sampled_from(["1.0", "0.3", 1]),
            "id": st.one_of(st.text(max_size=40), int64),
            "source": st.sampled_from([prefix_source, f"/{CITY}/{SITE}", "/x/y/z", ""]),
            "type": st.sampled_from(
                ["fabcity.flow", "fabcity.machine.job", "fabcity.meter.reading", "nope"]
            ),
            "data": st.one_of(flow, st.lists(flow, max_size=3), json_value),
        },
        optional={
            "time": st.one_of(st.datetimes().map(lambda d: d.isoformat()), st.text(max_size=30)),
            "subject": json_value,
        },
    )


def payloads(source: str) -> st.SearchStrategy[bytes]:
    as_json = st.one_of(_event(source), flow, st.lists(flow, max_size=3), json_value)
    return st.one_of(
        as_json.map(lambda v: orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS)),
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.just(b"{" * 5000),
        st.just(b"x" * (300 * 1024)),  # over the payload limit
    )


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Bridge, sessionmaker[Session]]]:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'fabcity.db'}"
    upgrade.upgrade(url)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    register(factory)
    bridge = Bridge(settings_for(url), factory, NoDispatch())
    yield bridge, factory
    engine.dispose()


def _counts(factory: sessionmaker[Session]) -> tuple[int, int]:
    with factory() as s:
        events = s.scalar(select(func.count()).select_from(Event)) or 0
        dead = s.scalar(select(func.count()).select_from(DeadLetter)) or 0
    return events, dead


@st.composite
def batches(draw: st.DrawFn, prefix: str) -> list[Received]:
    own = f"/{CITY}/{SITE}/{DEVICE}"
    topics = st.one_of(
        st.just(f"{prefix}{own}/events"),
        st.just(f"{prefix}/{CITY}/{SITE}/ghost/events"),
        st.just(f"{prefix}/{CITY}/{SITE}/{DEVICE}/status"),
        st.text(max_size=40),
        st.lists(st.text(max_size=8), max_size=6).map(lambda p: prefix + "/" + "/".join(p)),
    )
    n = draw(st.integers(min_value=5, max_value=40))
    return [
        Received(
            topic=draw(topics),
            payload=draw(payloads(own)),
            mid=i,
            qos=1,
            generation=0,
            received_at=datetime.now(UTC),
        )
        for i in range(n)
    ]


def commit_and_account(
    bridge: Bridge, factory: sessionmaker[Session], batch: list[Received]
) -> None:
    """The property, on any database: the bridge's writer raises nothing, and each message is
    stored, a duplicate, or refused with a reason (kept as a letter, or counted as a repeat or
    over the quota)."""
    events_before, dead_before = _counts(factory)
    stored_before, dead_count_before = bridge.stored, bridge.dead_lettered
    kept_before = bridge.letters_kept
    bridge._commit(batch)  # raises nothing: that is the property
    events_after, dead_after = _counts(factory)
    stored = bridge.stored - stored_before
    dead = bridge.dead_lettered - dead_count_before
    kept = bridge.letters_kept - kept_before
    assert events_after - events_before == stored
    # Refused messages are kept as rows, or counted as repeats or over the quota.
    assert dead_after - dead_before == kept <= dead
    # The rest were duplicates of stored events: no message is unaccounted for.
    assert stored + dead <= len(batch)
    with factory() as s:
        newest = list(s.scalars(select(DeadLetter).order_by(DeadLetter.id.desc()).limit(kept)))
    sent = {m.payload for m in batch}
    for letter in newest:
        assert letter.reason.strip(), "a dead letter without its reason"
        # The payload, or its first bytes when it was larger than a letter keeps.
        assert any(p.startswith(letter.payload) and len(p) == letter.payload_size for p in sent)


def test_no_message_escapes_or_vanishes(rig: tuple[Bridge, sessionmaker[Session]]) -> None:
    bridge, factory = rig
    prefix = bridge.settings.mqtt_topic_prefix

    @settings(
        max_examples=BATCHES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(batch=batches(prefix))
    def run(batch: list[Received]) -> None:
        SEEN["messages"] += len(batch)
        commit_and_account(bridge, factory, batch)

    run()
    print(f"fuzzed the bridge with {SEEN['messages']} messages")
    if BATCHES >= 600:
        assert SEEN["messages"] >= 10_000, SEEN


def test_a_good_message_among_bad_ones_is_stored(rig: tuple[Bridge, sessionmaker[Session]]) -> None:
    bridge, _ = rig
    prefix = bridge.settings.mqtt_topic_prefix
    good = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": f"/{CITY}/{SITE}/{DEVICE}",
        "type": "fabcity.flow",
        "data": {"action": "consume", "resource": "filament", "quantity": 1, "unit": "kg",
                 "ring": "city"},
    }  # fmt: skip
    topic = f"{prefix}/{CITY}/{SITE}/{DEVICE}/events"
    now = datetime.now(UTC)
    batch = [
        Received(topic, b"\x00garbage", 1, 1, 0, now),
        Received(topic, orjson.dumps(good), 2, 1, 0, now),
        Received(topic, b'{"specversion": "1.0", "source": "/elsewhere/x/y"}', 3, 1, 0, now),
    ]
    stored, dead = bridge.stored, bridge.dead_lettered
    bridge._commit(batch)
    assert (bridge.stored - stored, bridge.dead_lettered - dead) == (1, 2)
