"""`fabcity devices add|list` and `fabcity deadletters replay` as an operator runs them."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from sqlalchemy import func, select

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter, Event
from tests.services.cli.runner import assert_refused, fabcity
from tests.support.city import CITY, SITE, register


def test_register_a_printer_then_replay_what_it_sent_before(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    done = {"time": 60.0, "_event": "PrintDone", "_timestamp": 1767354324}
    with transaction(factory) as s:
        s.add(
            DeadLetter(
                received_at=datetime.now(UTC),
                channel="mqtt",
                topic="octoprint/event/PrintDone",
                payload=orjson.dumps(done),
                reason="no registered device for topic 'octoprint/event/PrintDone'",
            )
        )

    added = fabcity(
        sqlite_url,
        "devices",
        "add",
        CITY,
        SITE,
        "mk3",
        "--adapter",
        "octoprint",
        "--base-topic",
        "octoPrint",
        "--material",
        "PLA",
    )
    assert added.returncode == 0, added.stderr
    again = fabcity(sqlite_url, "devices", "add", CITY, SITE, "mk3b", "--adapter", "octoprint")
    assert again.returncode == 1
    assert "already reads octoprint" in again.stderr.replace("\n", " ")
    listed = fabcity(sqlite_url, "devices", "list", CITY)
    assert f"/{CITY}/{SITE}/mk3" in listed.stdout and "octoprint" in listed.stdout

    replayed = fabcity(sqlite_url, "deadletters", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert "1 went through" in replayed.stdout
    with transaction(factory) as s:
        assert s.scalar(select(func.count()).select_from(DeadLetter)) == 0
        assert s.scalar(select(func.count()).select_from(Event)) == 1
    engine.dispose()


def test_add_refuses_a_setting_that_is_not_key_value(sqlite_url: str) -> None:
    done = fabcity(sqlite_url, "devices", "add", CITY, SITE, "mk3", "--set", "access_code")
    assert_refused(done, 2, "--set 'access_code': write KEY=VALUE")


def test_add_refuses_a_base_topic_its_adapter_has_no_place_for(sqlite_url: str) -> None:
    done = fabcity(sqlite_url, "devices", "add", CITY, SITE, "mk3", "--base-topic", "octoPrint")
    assert_refused(done, 2, "--base-topic does not apply to the fabcity adapter")


def test_add_names_the_city_it_does_not_know(sqlite_url: str) -> None:
    done = fabcity(sqlite_url, "devices", "add", "nowhere", SITE, "mk3")
    assert_refused(done, 1, "no city 'nowhere'")
