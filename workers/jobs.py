"""What the workers do, independent of how they are run (Celery or in-process)."""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.orm import Session, sessionmaker

from fabcity import rollups, webhooks, windows
from fabcity.db import transaction

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
    """Recompute every dirty window, `batch` windows per transaction; returns how many."""
    total = 0
    while True:
        started = time.perf_counter()
        with transaction(factory) as session:
            claimed = windows.claim_dirty(session, batch)
            rollups.recompute(session, claimed)
            # Metric updates for webhook subscribers, committed with the rollups they announce.
            webhooks.announce_recomputed(session, [(c, d) for c, d, _ in claimed])
        done = len(claimed)
        RECOMPUTE_SECONDS.observe(time.perf_counter() - started)
        LAST_RECOMPUTE.set_to_current_time()
        RECOMPUTED.inc(done)
        total += done
        if done < batch:
            if total:
                log.info("recomputed windows", extra={"windows": total})
            return total
