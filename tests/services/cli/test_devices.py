"""`fabcity devices add|list` and `fabcity deadletters replay` as an operator runs them."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime

import orjson
from sqlalchemy import func, select

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter, Event
from tests.support.city import CITY, SITE, register
from tests.support.procs import FABCITY


def fabcity(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FABCITY_DATABASE_URL": url, "COLUMNS": "200"}
    return subprocess.run(
        [FABCITY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


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
