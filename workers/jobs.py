"""What the workers do, independent of how they are run (Celery or in-process)."""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.orm import Session, sessionmaker

from fabcity import webhooks
from fabcity.core.db import transaction
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


def recompute_dirty_windows(factory: sessionmaker[Session], batch: int) -> int:
    """Bring the rollups up to date: add the pending rows and rebuild the dirty windows,
    `batch` marks and `batch` windows per transaction. Returns how many (city, day, hour)
    windows changed."""
    total = 0
    while True:
        started = time.perf_counter()
        with transaction(factory) as session:
            done = recompute.recompute_dirty(session, batch)
            # Metric updates for webhook subscribers, committed with the rollups they announce.
            webhooks.announce_recomputed(session, sorted({(c, d) for c, d, _ in done.touched}))
        RECOMPUTE_SECONDS.observe(time.perf_counter() - started)
        LAST_RECOMPUTE.set_to_current_time()
        RECOMPUTED.inc(len(done.touched))
        total += len(done.touched)
        if done.windows < batch and done.marks < batch:
            if total:
                log.info("recomputed windows", extra={"windows": total})
            return total
