"""`fabcity deadletters show|replay`: the payload exactly as received, and the refusals."""

from __future__ import annotations

import hashlib
import os
import subprocess
from datetime import UTC, datetime

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter
from fabcity.ingest.deadletters import dead_letter
from tests.services.cli.runner import assert_refused, fabcity
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
