"""Telling the workers that windows became dirty, after the transaction that dirtied them.

Nudges are coalesced: many commits within one sweep period cause one task, not one each.
Nothing depends on a nudge arriving: the periodic sweep (beat, or the local loop) finds every
dirty window anyway; the nudge only makes metrics fresh sooner.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.settings import Settings
from workers import jobs, webhooks

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    def nudge(self) -> None: ...


class CeleryDispatcher:
    """Sends one recompute task per coalescing period (a Redis `SET NX PX` guards it)."""

    def __init__(self, settings: Settings) -> None:
        import redis

        from workers.celery_app import make_celery

        self._redis = redis.Redis.from_url(settings.redis_url)
        self._celery = make_celery(settings)
        self._key = f"{settings.redis_prefix}recompute:nudged"
        self._period_ms = max(1, int(settings.recompute_interval_s * 1000 / 4))

    def nudge(self) -> None:
        from workers.celery_app import RECOMPUTE

        try:
            # The task runs after the period, so it sees every commit that found the key set.
            if self._redis.set(self._key, b"1", nx=True, px=self._period_ms):
                self._celery.send_task(RECOMPUTE, countdown=self._period_ms / 1000)
        except Exception:  # the sweep catches up; a nudge is never worth failing a request
            log.warning("could not nudge the workers", exc_info=True)


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
