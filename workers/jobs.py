"""What the workers do, independent of how they are run (Celery or in-process)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity import webhooks
from fabcity.core.db import transaction
from fabcity.core.models import City
from fabcity.rollups import recompute

log = logging.getLogger(__name__)

RECOMPUTED = Counter("fabcity_worker_windows_recomputed_total", "Windows recomputed")
RECOMPUTE_SECONDS = Histogram(
    "fabcity_worker_recompute_seconds", "Time of one recompute transaction (up to `batch` windows)"
)
# Recompute lag on a dashboard: time() - this, while windows are being dirtied.
LAST_RECOMPUTE = Gauge(
    "fabcity_worker_last_recompute_timestamp",
    "Unix time the last recompute transaction committed",
    multiprocess_mode="max",
)

RECOMPUTE_FAILURES = Counter(
    "fabcity_worker_recompute_failures_total",
    "Recomputes of a city's rollups that failed; the city's work stays pending and is tried "
    "again after a backoff, while other cities go on",
    ["city"],
)
# Cities waiting for their next try after a failure, in this process.
CITIES_BACKING_OFF = Gauge(
    "fabcity_worker_cities_backing_off",
    "Cities whose recompute failed and waits for its next try",
    multiprocess_mode="max",
)


class Backoff:
    """When each failing city may be tried again: `first` seconds after a first failure,
    doubling with each further one up to `most`. Kept in memory, per worker process: a
    restarted worker tries every city once more, which is what an operator who fixed the
    data wants anyway."""

    def __init__(
        self, first: float = 5.0, most: float = 600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._first, self._most, self._clock = first, most, clock
        self._failures: dict[int, tuple[int, float]] = {}  # city id: (failures, next try)
        self._lock = threading.Lock()

    def waiting(self) -> set[int]:
        """The cities not to be tried now."""
        now = self._clock()
        with self._lock:
            return {city for city, (_, at) in self._failures.items() if at > now}

    def failed(self, city_id: int) -> float:
        """Note a failure; returns the seconds until the city's next try."""
        with self._lock:
            count = self._failures.get(city_id, (0, 0.0))[0] + 1
            wait: float = min(self._most, self._first * 2.0 ** min(count - 1, 32))
            self._failures[city_id] = (count, self._clock() + wait)
            CITIES_BACKING_OFF.set(len(self._failures))
            return wait

    def succeeded(self, city_ids: set[int]) -> None:
        with self._lock:
            for city_id in city_ids:
                self._failures.pop(city_id, None)
            CITIES_BACKING_OFF.set(len(self._failures))


BACKOFF = Backoff()


def recompute_dirty_windows(
    factory: sessionmaker[Session], batch: int, backoff: Backoff = BACKOFF
) -> int:
    """Bring the rollups up to date: add the pending rows and rebuild the dirty windows,
    `batch` marks and `batch` windows per transaction. Returns how many (city, day, hour)
    windows changed. A city whose recompute fails stays pending, is reported (log, metric)
    and waits out its `backoff`; the other cities go on."""
    total = 0
    while True:
        started = time.perf_counter()
        with transaction(factory) as session:
            done = recompute.recompute_dirty(session, batch, backoff.waiting())
            # Metric updates for webhook subscribers, committed with the rollups they announce.
            webhooks.announce_recomputed(session, sorted({(c, d) for c, d, _ in done.touched}))
            if done.failed:
                _report(session, done.failed, backoff)
        backoff.succeeded({c for c, _, _ in done.touched})
        RECOMPUTE_SECONDS.observe(time.perf_counter() - started)
        LAST_RECOMPUTE.set_to_current_time()
        RECOMPUTED.inc(len(done.touched))
        total += len(done.touched)
        if done.windows < batch and done.marks < batch:
            if total:
                log.info("recomputed windows", extra={"windows": total})
            return total


def _report(session: Session, failed: dict[int, Exception], backoff: Backoff) -> None:
    found = session.execute(select(City.id, City.slug).where(City.id.in_(sorted(failed))))
    slugs = {city_id: slug for city_id, slug in found}
    for city_id, exc in sorted(failed.items()):
        city = slugs.get(city_id, str(city_id))
        wait = backoff.failed(city_id)
        RECOMPUTE_FAILURES.labels(city).inc()
        log.error(
            "recompute of city %s failed; its rollups stay pending, next try in %.0f s: %s: %s",
            city,
            wait,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
            extra={"city": city},
            exc_info=exc,
        )
