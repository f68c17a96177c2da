"""Where an ingest request's time goes, for bench.http_spread; off unless asked for.

`FABCITY_HTTP_TIMING=<prefix>` writes one JSON line per `POST /v1/events` to
`<prefix>.<pid>.jsonl`: when the request reached the app, when its body had all come, when the
endpoint started in the threadpool (the wait between the two is the threadpool's), the thread CPU
of parsing and of storing, the wall time of storing and of its commit, when the answer went; and
the process's totals so far (CPU, garbage-collector passes and their pauses by generation), so
that a run's lines tell the time of its collector apart from the rest.

Two settings of the experiment, read at start-up (the lifespan, after the process has tuned its
collector in `fabcity.core.gc_tuning`), so that one run can set remedies against each other:
`FABCITY_HTTP_GC=off` turns the collector off, `=default` undoes the tuning (CPython's
thresholds, nothing frozen); `FABCITY_HTTP_THREADS=N` gives the threadpool N threads (anyio's
default is 40); `FABCITY_HTTP_RECONNECT=always` ends every ingest request's connection
(`Connection: close`), `=busy` those that arrive while the process is storing another, so that
clients connect again and the kernel hands the connection to whichever worker accepts first.

Without the variable nothing is wrapped: `marks` hands back a function that does nothing.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, BinaryIO

import anyio.to_thread
import orjson
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

ENV = "FABCITY_HTTP_TIMING"
GC_ENV = "FABCITY_HTTP_GC"
THREADS_ENV = "FABCITY_HTTP_THREADS"
RECONNECT_ENV = "FABCITY_HTTP_RECONNECT"
PATH = "/v1/events"
CLOSE = (b"connection", b"close")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Mark = Callable[[str], None]


def enabled() -> bool:
    return bool(os.environ.get(ENV))


# The collector's passes in this process: count and seconds by generation. A pass stops every
# thread (it holds the GIL), so its pause is the whole process's.
_gc_count = [0, 0, 0]
_gc_seconds = [0.0, 0.0, 0.0]
_gc_started = [0.0]


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        generation = info["generation"]
        _gc_count[generation] += 1
        _gc_seconds[generation] += time.perf_counter() - _gc_started[0]


def _totals() -> dict[str, Any]:
    return {
        "cpu": time.process_time(),
        "gc_count": list(_gc_count),
        "gc_s": list(_gc_seconds),
    }


# The commit of the request's transaction, timed in its own thread: from the Connection's
# `commit` event (just before COMMIT is sent) to the Session's `after_commit` (the server has
# answered, so the WAL is flushed).
_local = threading.local()


def _before_commit(_: Any) -> None:
    _local.commit_at = time.perf_counter()


def _after_commit(_: Session) -> None:
    at = getattr(_local, "commit_at", None)
    if at is not None:
        _local.commit_s = time.perf_counter() - at


def _noop(_: str) -> None:
    return None


def marks(scope: Scope) -> Mark:
    """A function that records a named point of the request (wall clock and thread CPU), or
    does nothing when the request is not timed."""
    record: dict[str, Any] | None = scope.get("state", {}).get("timing")
    if record is None:
        return _noop

    def mark(name: str) -> None:
        record[name] = time.perf_counter()
        record[name + "_cpu"] = time.thread_time()
        if name == "stored":
            record["commit"] = getattr(_local, "commit_s", None)
            _local.commit_s = None

    return mark


class Timing:
    """The outermost middleware when timing: one line per ingest request."""

    def __init__(self, app: ASGIApp, factory: sessionmaker[Session]) -> None:
        self.app = app
        self.out: BinaryIO | None = None
        self.reconnect = os.environ.get(RECONNECT_ENV, "")
        self.in_flight = 0
        # Once per process, however many apps are made (tests make several).
        if _on_gc not in gc.callbacks:
            gc.callbacks.append(_on_gc)
        engine = factory.kw["bind"]
        if not event.contains(engine, "commit", _before_commit):
            event.listen(engine, "commit", _before_commit)
        if not event.contains(factory, "after_commit", _after_commit):
            event.listen(factory, "after_commit", _after_commit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            _settings()
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        record: dict[str, Any] = {"pid": os.getpid(), "arrive": time.perf_counter()}
        self.in_flight += 1
        record["in_flight"] = self.in_flight
        close = self.reconnect == "always" or (self.reconnect == "busy" and self.in_flight > 1)
        record["before"] = _totals()
        scope.setdefault("state", {})["timing"] = record

        async def timed_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                record["body"] = time.perf_counter()
            return message

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
                if close:
                    message = {**message, "headers": [*message["headers"], CLOSE]}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record["sent"] = time.perf_counter()

        try:
            await self.app(scope, timed_receive, timed_send)
        finally:
            self.in_flight -= 1
            record["after"] = _totals()
            self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        if self.out is None:
            # Opened in the worker process, where the requests are served: one file per pid.
            self.out = open(f"{os.environ[ENV]}.{os.getpid()}.jsonl", "ab")  # noqa: SIM115
        self.out.write(orjson.dumps(record) + b"\n")
        self.out.flush()


def _settings() -> None:
    """The experiment's settings, in the worker's event loop, after the collector's tuning."""
    collector = os.environ.get(GC_ENV, "")
    if collector == "off":
        gc.disable()
    elif collector == "default":
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)
    threads = os.environ.get(THREADS_ENV, "")
    if threads:
        anyio.to_thread.current_default_thread_limiter().total_tokens = int(threads)
