"""Taking a batch off a queue: the first item waits, the rest fill in for a moment."""

from __future__ import annotations

import queue
import time
from typing import TypeVar

T = TypeVar("T")


def take_batch(source: queue.Queue[T], size: int, wait_s: float, first_s: float = 0.2) -> list[T]:
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
