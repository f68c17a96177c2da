"""`fabcity` with a bridge that dies right after its first commit, before acknowledging it:

    python -m tests.support.faulty_bridge bridge

The broker then delivers the committed messages again to the next bridge, which must store
them once. The fault is wrapped around `Bridge._commit` here, in the test's own launcher, so
the shipped bridge carries no switch for it. Only a bridge running in this process dies: the
children of `bridge --processes N` are processes of their own, without the fault.
"""

from __future__ import annotations

import logging
import os

from services.mqtt.bridge import Bridge, Received

# What the process exits with, for the test to tell the planned death from a crash.
EXIT_AFTER_COMMIT = 3

log = logging.getLogger(__name__)


def fail_after_commit() -> None:
    """Make every bridge of this process exit once it has committed a batch."""
    commit = Bridge._commit

    def commit_then_exit(bridge: Bridge, batch: list[Received]) -> None:
        commit(bridge, batch)
        log.warning("fault injection: exiting after commit, before acknowledging")
        # No cleanup, no flush: as abrupt as a crash between the commit and the ack.
        os._exit(EXIT_AFTER_COMMIT)

    Bridge._commit = commit_then_exit  # type: ignore[method-assign,assignment]


def main() -> None:
    # Imported here, not at the top: a test that only reads `EXIT_AFTER_COMMIT` does not load
    # the whole command.
    from services.cli.main import app

    fail_after_commit()
    app(prog_name="fabcity")


if __name__ == "__main__":
    main()
