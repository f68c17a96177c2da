"""Running `fabcity` as an operator does, against one database, and reading its refusals."""

from __future__ import annotations

import os
import subprocess

from tests.support.procs import FABCITY


def fabcity(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FABCITY_DATABASE_URL": url, "COLUMNS": "200"}
    return subprocess.run(
        [FABCITY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def assert_refused(done: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    """A refusal: this exit status, one clear line on stderr, no traceback, nothing on stdout."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert says in done.stderr.replace("\n", " "), done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
