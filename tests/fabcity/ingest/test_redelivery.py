"""A batch of device messages committed and not acknowledged comes again from the broker,
flagged DUP, to device states that have already taken it in: it must count nothing twice.
(The same through Mosquitto and a bridge that dies between commit and ack:
tests/replay/test_replay.py.)"""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters.base import Message
from fabcity.core.db import transaction
from fabcity.core.models import Event, Flow
from fabcity.ingest.intake import store
from fabcity.registry import entries
from schemas import api
from tests.fabcity.adapters.support import T0
from tests.fixtures.devices import load
from tests.support.city import CITY, SITE, register

PLUG = "shellyplusplugs-e86beae12f10"
SCALE = "tele/scale-intake/SENSOR"


@pytest.fixture
def city(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    register(factory)
    with transaction(factory) as s:
        site = entries.get_site(s, entries.get_city(s, CITY), SITE)
        for slug, kind, adapter, settings in (
            ("plug", "meter", "shelly", {"topic_prefix": PLUG}),
            ("scale", "scale", "tasmota", {"topic": "scale-intake", "resource": "plastic"}),
        ):
            body = api.DeviceIn(slug=slug, name=slug, kind=kind, adapter=adapter, settings=settings)
            entries.create_device(s, site, body)
    return factory


def switch(total_wh: float, second: int) -> Message:
    body = load("shelly/status-switch.json")
    body["aenergy"]["total"] = total_wh
    return Message(f"{PLUG}/status/switch:0", orjson.dumps(body), T0.replace(second=second))


def weighing(kg: float, time: str, second: int) -> Message:
    body = {"Time": time, "HX711": {"Weight": kg, "WeightRaw": 1624, "AbsRaw": 841532}}
    return Message(SCALE, orjson.dumps(body), T0.replace(second=second))


def take(factory: sessionmaker[Session], *messages: Message) -> None:
    with transaction(factory) as session:
        store(session, list(messages))


def totals(factory: sessionmaker[Session]) -> dict[str, float]:
    with transaction(factory) as s:
        rows = s.execute(select(Flow.resource, func.sum(Flow.amount)).group_by(Flow.resource))
        return {r: int(n) / 1e6 for r, n in rows}


def events(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as s:
        return s.scalar(select(func.count()).select_from(Event)) or 0


def again(message: Message) -> Message:
    return replace(message, redelivered=True)


def test_a_redelivered_batch_counts_nothing_twice(city: sessionmaker[Session]) -> None:
    first = [
        switch(26064.252, 0),  # the baseline
        switch(26564.252, 1),  # +0.5 kWh
        switch(100.0, 2),  # `Switch.ResetCounters`: +0.1 kWh
        weighing(1.412, "2026-01-02T10:00:00", 3),
        weighing(0.0, "2026-01-02T10:01:00", 4),
        weighing(2.25, "2026-01-02T10:02:00", 5),
    ]
    take(city, *first)
    assert events(city) == 4
    # Committed, not acknowledged: the broker sends the batch again, and after it what is new.
    # Unflagged, 26,064.252 Wh after 100 Wh would be a reset (+26 kWh) and 1.412 kg a new
    # weighing.
    take(city, *map(again, first[:4]))
    take(city, *map(again, first[4:]), switch(300.0, 6), weighing(0.0, "2026-01-02T10:03:00", 7))
    assert totals(city) == pytest.approx({"electricity": 0.5 + 0.1 + 0.2, "plastic": 3.662})
    assert events(city) == 5


def test_the_same_bytes_sent_again_by_the_device_are_new(city: sessionmaker[Session]) -> None:
    # Not redelivered: a device may well repeat itself (two items of the same weight).
    item = weighing(1.412, "2026-01-02T10:00:00", 0)
    take(city, item, weighing(0.0, "2026-01-02T10:01:00", 1))
    take(city, item)
    assert totals(city) == pytest.approx({"plastic": 2 * 1.412})
