"""Batches off a queue, and the one loop that stores them: a batch that fails is kept and
tried again, and nothing of it is acknowledged before it is committed."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from fabcity.core.errors import Busy

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


class Backlog(Generic[T]):
    """A bounded first-in first-out store of items put in runs, taken in batches.

    The bridge's receiving thread reads many messages per pass over its buffer
    (`services.mqtt.client`); a `queue.Queue` takes its lock and wakes a writer once per
    message on each side, about 3 us a message here. This takes the lock once per run and
    once per batch. It holds at most `maxsize` items: a run that does not fit waits for room
    (the receiving thread blocks, TCP pushes back, the backlog stays at the broker), a part at
    a time, so the bound is never passed.
    """

    def __init__(self, maxsize: int) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._changed = threading.Condition()

    def put(self, item: T) -> None:
        self.put_many((item,))

    def put_many(self, items: Sequence[T]) -> None:
        start = 0
        with self._changed:
            while start < len(items):
                room = self._maxsize - len(self._items)
                if room <= 0:
                    self._changed.wait()
                    continue
                self._items.extend(items[start : start + room])
                start += room
                self._changed.notify_all()

    def take(self, size: int, wait_s: float, first_s: float = FIRST_ITEM_WAIT_S) -> list[T]:
        """As `take_batch`: up to `size` items, the first waited for `first_s`, the rest
        for `wait_s` at most; an empty list after `first_s`."""
        with self._changed:
            if not self._items:
                deadline = time.monotonic() + first_s
                while not self._items:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    self._changed.wait(remaining)
            deadline = time.monotonic() + wait_s
            while len(self._items) < size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            items = self._items
            batch = [items.popleft() for _ in range(min(size, len(items)))]
            self._changed.notify_all()  # room for the receiving thread
            return batch

    def qsize(self) -> int:
        return len(self._items)


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
        except Exception as exc:
            if isinstance(exc, Busy):
                # Nothing is wrong: what the batch needs is being changed (its city's time
                # zone, a device's settings) for as long as that takes. One line a try, no
                # traceback; tried again as after a failure.
                log.warning(
                    "storing %d %s waits: %s; trying again in %.1fs",
                    len(batch), what, exc.detail, delay,
                )  # fmt: skip
            else:
                log.exception("storing %d %s failed; retrying in %.1fs", len(batch), what, delay)
            if stop.wait(delay):
                return
            delay = min(delay * 2, RETRY_LONGEST_DELAY_S)
            continue
        delay = RETRY_FIRST_DELAY_S
        committed(batch, result)
        batch = []
