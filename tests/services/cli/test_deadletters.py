"""`fabcity deadletters show|replay`: the payload exactly as received, and the refusals."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter
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
