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
from typing import Any

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


# With this set, the fault is in the device lane instead: the bridge exits right after the
# lane commits a batch holding a message on this topic, before acknowledging the batch.
LANE_FAULT_TOPIC = "FABCITY_TEST_LANE_EXIT_AFTER_TOPIC"


def fail_after_lane_commit(topic: str) -> None:
    """Make the device lane exit once it has committed a batch with a message on `topic`."""
    from services.mqtt import lanes

    store = lanes.store_batch

    def store_then_exit(factory: Any, batch: list[Any], keeper: Any = None) -> Any:
        outcome = store(factory, batch, keeper)
        if any(m.topic == topic for m in batch):
            log.warning("fault injection: exiting after the lane's commit, before its ack")
            os._exit(EXIT_AFTER_COMMIT)
        return outcome

    lanes.store_batch = store_then_exit


def main() -> None:
    # Imported here, not at the top: a test that only reads `EXIT_AFTER_COMMIT` does not load
    # the whole command.
    from services.cli.main import app

    lane_topic = os.environ.get(LANE_FAULT_TOPIC)
    if lane_topic:
        fail_after_lane_commit(lane_topic)
    else:
        fail_after_commit()
    app(prog_name="fabcity")


if __name__ == "__main__":
    main()
