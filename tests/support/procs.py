"""Running `fabcity` subcommands as real processes in tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

FABCITY = str(Path(sys.executable).with_name("fabcity"))
# `fabcity` whose bridge exits after its first commit, before acknowledging (see the module).
FAULTY_BRIDGE = [sys.executable, "-m", "tests.support.faulty_bridge"]


class Proc:
    """A `fabcity` process whose output is collected line by line as it runs.

    `program` runs instead of `fabcity` (`FAULTY_BRIDGE`, say), with the same `args`.
    """

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        program: list[str] | None = None,
    ) -> None:
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            [*(program or [FABCITY]), *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        wait_until(lambda: text in self.output or self.popen.poll() is not None, timeout)
        if text not in self.output:
            raise AssertionError(f"{text!r} never appeared; output:\n{self.output}")

    def stop(self, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(timeout=5)
        return self.popen.returncode


def wait_until(condition: Callable[[], object], timeout: float = 30, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)
