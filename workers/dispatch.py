"""Telling the workers that windows became dirty, after the transaction that dirtied them.

Nudges are coalesced: many commits within one sweep period cause one task, not one each.
Nothing depends on a nudge arriving: the periodic sweep (beat, or the local loop) finds every
dirty window anyway; the nudge only makes metrics fresh sooner.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.settings import Settings
from workers import jobs, webhooks

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def nudge(self) -> None: ...


class CeleryDispatcher:
    """Sends one recompute task per coalescing period (a Redis `SET NX PX` guards it), from a
    thread of its own: a request or a bridge batch only sets a flag, and never waits on Redis.

    The flag is a queue of one: nudges that come while one is being sent become one, and while
    Redis is slow or gone they are dropped after a failed send; the periodic sweep (beat) finds
    the dirty windows without them."""

    def __init__(self, settings: Settings) -> None:
        import redis

        from workers.celery_app import REDIS_TIMEOUT_S, make_celery

        # Bounded, so a frozen Redis holds the sender thread for seconds, not for ever.
        self._redis = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        self._celery = make_celery(settings)
        self._key = f"{settings.redis_prefix}recompute:nudged"
        self._period_ms = max(1, int(settings.recompute_interval_s * 1000 / 4))
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def nudge(self) -> None:
        self._wanted.set()
        with self._lock:
            # Started on first use, and again in a process forked after it (no thread survives
            # a fork).
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fabcity-nudge", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                self._send()
            except Exception:  # the sweep catches up; a nudge is never worth more
                log.warning("could not nudge the workers", exc_info=True)
                # Redis is slow or gone: nudges meanwhile are one flag, sent (or dropped)
                # after this pause rather than each waiting on a timeout.
                time.sleep(1.0)

    def _send(self) -> None:
        from workers.celery_app import RECOMPUTE

        # The task runs after the period, so it sees every commit that found the key set.
        if self._redis.set(self._key, b"1", nx=True, px=self._period_ms):
            # No retries: a send that fails is dropped (the sweep catches up).
            self._celery.send_task(RECOMPUTE, countdown=self._period_ms / 1000, retry=False)


class LocalWorker:
    """Runs the recompute in a thread of this process: the embedded default's worker."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self._factory = factory
        self._settings = settings
        self._batch = settings.recompute_batch
        self._interval = settings.recompute_interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fabcity-worker", daemon=True)
        self.recomputed = 0
        self.delivered = 0

    def start(self) -> LocalWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def nudge(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            # Let a burst of commits settle into one recompute.
            self._stop.wait(0.2)
            try:
                self.recomputed += jobs.recompute_dirty_windows(self._factory, self._batch)
            except Exception:
                log.exception("recompute failed; retrying on the next sweep")
            try:
                self.delivered += webhooks.deliver_due(self._factory, self._settings)
            except Exception:
                log.exception("webhook delivery failed; retrying on the next sweep")


class NoDispatch:
    def nudge(self) -> None:
        return None
