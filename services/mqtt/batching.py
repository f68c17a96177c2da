"""Batches off a queue, and the one loop that stores them: a batch that fails is kept and
tried again, and nothing of it is acknowledged before it is committed."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# How long the first item of a batch is waited for: an empty batch that often lets a writer
# look at its stop flag.
FIRST_ITEM_WAIT_S = 0.2
# A failed commit is retried after this delay, doubled at each failure up to the longest:
# PostgreSQL restarting or away is waited for without hammering it.
RETRY_FIRST_DELAY_S = 0.5
RETRY_LONGEST_DELAY_S = 30.0


def take_batch(
    source: queue.Queue[T], size: int, wait_s: float, first_s: float = FIRST_ITEM_WAIT_S
) -> list[T]:
    """Up to `size` items: waits `first_s` for the first, then `wait_s` at most for the rest.

    An empty list after `first_s` lets the caller look at its stop flag.
    """
    try:
        batch = [source.get(timeout=first_s)]
    except queue.Empty:
        return []
    deadline = time.monotonic() + wait_s
    while len(batch) < size:
        remaining = deadline - time.monotonic()
        try:
            batch.append(source.get(timeout=remaining) if remaining > 0 else source.get_nowait())
        except queue.Empty:
            break
    return batch


def write_batches(
    take: Callable[[], list[T]],
    commit: Callable[[list[T]], R],
    committed: Callable[[list[T], R], None],
    stop: threading.Event,
    what: str,
    drain: bool = False,
) -> None:
    """Take batches and commit each one until `stop` is set, a writer thread's whole life.

    `commit` stores a batch in one transaction; when it raises, the same batch (same items,
    same order: adapters keep per-device state) is committed again after a delay that doubles
    up to `RETRY_LONGEST_DELAY_S`. `committed` runs once per batch, only after its commit
    succeeded: acknowledgements go there, so a failure can never acknowledge what is not
    stored. A failure in `committed` is not retried, since the batch is already stored and a
    second commit would apply device messages twice.

    A stop ends the loop between batches, or during a retry's wait (the batch stays
    unacknowledged, for the broker to deliver again). With `drain`, for sources nothing
    redelivers (printers polled or dialled), what is queued when the stop comes is still
    taken and stored: the loop ends when `take` comes back empty.
    """
    delay = RETRY_FIRST_DELAY_S
    batch: list[T] = []
    while True:
        if not batch:
            if stop.is_set() and not drain:
                return
            batch = take()
            if not batch:
                if stop.is_set():
                    return
                continue
        try:
            result = commit(batch)
        except Exception:
            log.exception("storing %d %s failed; retrying in %.1fs", len(batch), what, delay)
            if stop.wait(delay):
                return
            delay = min(delay * 2, RETRY_LONGEST_DELAY_S)
            continue
        delay = RETRY_FIRST_DELAY_S
        committed(batch, result)
        batch = []
