"""The writers' one loop: a failed batch is kept and retried, acknowledged only once stored."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import pytest

from fabcity.core.errors import Busy
from services.mqtt.batching import (
    RETRY_FIRST_DELAY_S,
    RETRY_LONGEST_DELAY_S,
    Backlog,
    take_batch,
    write_batches,
)


class Stop(threading.Event):
    """A stop flag whose waits return at once and are written down."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def batches(stop: threading.Event, *items: list[int]) -> Callable[[], list[int]]:
    """A `take` that hands out the given batches, then sets `stop`."""
    left = list(items)

    def take() -> list[int]:
        if left:
            return left.pop(0)
        stop.set()
        return []

    return take


def test_a_failed_batch_is_retried_whole_with_doubling_delays_then_acknowledged() -> None:
    stop = Stop()
    failures = {"first": 8, "second": 1}
    tried: list[list[int]] = []
    acked: list[tuple[list[int], str]] = []

    def commit(batch: list[int]) -> str:
        tried.append(list(batch))
        key = "first" if batch == [1, 2] else "second"
        if failures[key]:
            failures[key] -= 1
            raise RuntimeError("database away")
        return f"stored {len(batch)}"

    write_batches(
        batches(stop, [1, 2], [3]),
        commit,
        lambda batch, result: acked.append((batch, result)),
        stop,
        "test items",
    )
    assert tried == [[1, 2]] * 9 + [[3]] * 2
    assert acked == [([1, 2], "stored 2"), ([3], "stored 1")]
    longest = RETRY_LONGEST_DELAY_S
    doubling = [RETRY_FIRST_DELAY_S * 2**n for n in range(8)]
    # The delay doubles up to the longest, and starts over after a success.
    assert stop.waits == [min(d, longest) for d in doubling] + [RETRY_FIRST_DELAY_S]


def test_a_stop_during_a_retry_leaves_the_batch_unacknowledged() -> None:
    stop = Stop()
    acked: list[list[int]] = []

    def commit(batch: list[int]) -> None:
        stop.set()
        raise RuntimeError("database away")

    write_batches(lambda: [1], commit, lambda batch, _: acked.append(batch), stop, "test items")
    assert acked == []
    assert stop.waits == [RETRY_FIRST_DELAY_S]


@pytest.mark.parametrize(("drain", "expected"), [(False, []), (True, [[1, 2], [3]])])
def test_what_is_queued_at_the_stop_is_stored_only_when_draining(
    drain: bool, expected: list[list[int]]
) -> None:
    source: queue.Queue[int] = queue.Queue()
    for item in (1, 2, 3):
        source.put(item)
    stop = threading.Event()
    stop.set()
    stored: list[list[int]] = []
    write_batches(
        lambda: take_batch(source, 2, 0, first_s=0),
        stored.append,
        lambda _b, _r: None,
        stop,
        "test items",
        drain=drain,
    )
    assert stored == expected


# The backlog between the receiving thread and the writers --------------------------------------


def test_the_backlog_gives_batches_in_order_and_never_holds_more_than_its_bound() -> None:
    backlog: Backlog[int] = Backlog(maxsize=100)
    deepest = 0
    taken: list[int] = []
    done = threading.Event()

    def writer() -> None:
        nonlocal deepest
        while len(taken) < 1000:
            deepest = max(deepest, backlog.qsize())
            time.sleep(0.001)  # slower than the receiving thread: the bound is what holds it
            taken.extend(backlog.take(size=30, wait_s=0.0, first_s=1.0))
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    # Runs larger than the bound: each goes in a part at a time, as room is made.
    for start in range(0, 1000, 250):
        backlog.put_many(list(range(start, start + 250)))
    assert done.wait(10)
    assert taken == list(range(1000))
    assert deepest <= 100


def test_a_take_waits_for_its_first_item_then_briefly_for_the_rest() -> None:
    backlog: Backlog[str] = Backlog(maxsize=10)
    started = time.monotonic()
    assert backlog.take(size=5, wait_s=0.0, first_s=0.05) == []  # nothing came: look at stop
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.05, lambda: backlog.put_many(["a", "b"])).start()
    # The first item is waited for; the batch goes out short once `wait_s` has passed.
    assert backlog.take(size=5, wait_s=0.05, first_s=5.0) == ["a", "b"]
    backlog.put("c")
    assert backlog.take(size=1, wait_s=5.0) == ["c"]  # full at once: no wait


def test_a_busy_batch_is_tried_again_with_one_line_and_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A city's zone moving is no failure: the batch waits, unacknowledged, and the log says
    why in one line a try, where a failure's traceback would fill it for minutes."""
    stop = Stop()
    tries: list[list[int]] = []
    acked: list[list[int]] = []

    def commit(batch: list[int]) -> str:
        tries.append(list(batch))
        if len(tries) < 3:
            raise Busy("a city of these events (testville) is having its time zone changed")
        return "stored"

    with caplog.at_level("WARNING", logger="services.mqtt.batching"):
        write_batches(
            batches(stop, [1, 2]), commit, lambda b, _: acked.append(b), stop, "test items"
        )
    assert tries == [[1, 2]] * 3
    assert acked == [[1, 2]]
    busy = [r for r in caplog.records if "waits" in r.getMessage()]
    assert len(busy) == 2
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in busy)
    assert "testville" in busy[0].getMessage()
    assert stop.waits[:2] == [RETRY_FIRST_DELAY_S, RETRY_FIRST_DELAY_S * 2]
