"""`fabcity deadletters show|replay`: the payload exactly as received, and the refusals."""

from __future__ import annotations

import hashlib
import os
import subprocess
from datetime import UTC, datetime

import orjson
from sqlalchemy import func, select

from fabcity.adapters.base import Message
from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter, Event
from fabcity.ingest.deadletters import Keeper, dead_letter
from tests.services.cli.runner import assert_refused, fabcity
from tests.support.city import CITY, SITE, flow, register
from tests.support.procs import FABCITY


def test_show_writes_the_payload_byte_for_byte_on_stdout(sqlite_url: str) -> None:
    # Not UTF-8, and with a NUL: what a broken device sends is what the operator gets back.
    payload = b"\xff\x00{not json"
    engine = make_engine(sqlite_url)
    with transaction(make_sessionmaker(engine)) as s:
        letter = DeadLetter(
            received_at=datetime.now(UTC),
            channel="mqtt",
            topic="fabcity/v1/x/y/z/events",
            payload=payload,
            reason="not JSON",
        )
        s.add(letter)
        s.flush()
        letter_id = letter.id
    engine.dispose()
    env = {**os.environ, "FABCITY_DATABASE_URL": sqlite_url}
    done = subprocess.run(
        [FABCITY, "deadletters", "show", str(letter_id)], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload + b"\n"
    assert b"reason: not JSON" in done.stderr


def test_show_names_the_letter_it_does_not_have(sqlite_url: str) -> None:
    assert_refused(fabcity(sqlite_url, "deadletters", "show", "5"), 1, "no dead letter 5")


def test_replay_asks_which_letters(sqlite_url: str) -> None:
    done = fabcity(sqlite_url, "deadletters", "replay")
    assert_refused(done, 2, "give --id N (repeatable) or --all")


def test_a_letter_cut_short_is_shown_with_its_size_and_hash_and_not_replayed(
    sqlite_url: str,
) -> None:
    payload = b"{" + b"x" * 999
    engine = make_engine(sqlite_url)
    with transaction(make_sessionmaker(engine)) as s:
        letter = dead_letter(
            datetime.now(UTC), "mqtt", "fabcity/v1/x/y/z/events", payload, "too large", 100
        )
        s.add(letter)
        s.flush()
        letter_id = letter.id
    engine.dispose()
    listed = fabcity(sqlite_url, "deadletters", "list")
    assert "1000 (kept 100)" in listed.stdout, listed.stdout
    env = {**os.environ, "FABCITY_DATABASE_URL": sqlite_url}
    shown = subprocess.run(
        [FABCITY, "deadletters", "show", str(letter_id)], env=env, capture_output=True, timeout=60
    )
    assert shown.stdout == payload[:100] + b"\n"
    assert b"1000 bytes" in shown.stderr
    assert hashlib.sha256(payload).hexdigest().encode() in shown.stderr
    assert b"only the first 100 bytes were kept: not replayable" in shown.stderr
    replayed = fabcity(sqlite_url, "deadletters", "replay", "--all")
    assert "1 still refused (1 cut short when kept: not replayable)" in replayed.stdout


def test_letters_of_an_unknown_device_go_through_once_it_is_registered_on_sqlite(
    sqlite_url: str,
) -> None:
    # SQLite gives back the receive time without its zone: the replay must still read it.
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    topic = f"fabcity/v1/{CITY}/{SITE}/unknown-dev/events"
    received = datetime.now(UTC)
    with transaction(factory) as s:
        for quantity in (1, 2, 3):
            message = Message(topic, orjson.dumps(flow(quantity=quantity)), received)
            Keeper().keep(s, "mqtt", [(message, "refused when received")])
    engine.dispose()

    refused_again = fabcity(sqlite_url, "deadletters", "replay", "--all")
    assert "0 went through (0 new events), 3 still refused" in refused_again.stdout, (
        refused_again.stdout + refused_again.stderr
    )
    listed = fabcity(sqlite_url, "deadletters", "list")
    # The reason it was refused with stands; the replay's outcome is shown beside it.
    assert listed.stdout.count("refused when received") == 3, listed.stdout
    assert listed.stdout.count("once, last") == 3, listed.stdout
    shown = fabcity(sqlite_url, "deadletters", "show", "1")
    assert "reason: refused when received" in shown.stderr
    assert "last replay: once, last" in shown.stderr
    assert "no device 'unknown-dev'" in shown.stderr.replace("\n", " ")

    added = fabcity(sqlite_url, "devices", "add", CITY, SITE, "unknown-dev")
    assert added.returncode == 0, added.stderr
    replayed = fabcity(sqlite_url, "deadletters", "replay", "--all")
    assert "3 went through (3 new events), 0 still refused" in replayed.stdout, (
        replayed.stdout + replayed.stderr
    )
    engine = make_engine(sqlite_url)
    with transaction(make_sessionmaker(engine)) as s:
        assert s.scalar(select(func.count()).select_from(DeadLetter)) == 0
        assert s.scalar(select(func.count()).select_from(Event)) == 3
    engine.dispose()
