"""What the workers do, independent of how they are run (Celery or in-process)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from fabcity import rollups
from fabcity.db import transaction

log = logging.getLogger(__name__)


def recompute_dirty_windows(factory: sessionmaker[Session], batch: int) -> int:
    """Recompute every dirty window, `batch` windows per transaction; returns how many."""
    total = 0
    while True:
        with transaction(factory) as session:
            done = rollups.recompute_dirty(session, batch)
        total += done
        if done < batch:
            if total:
                log.info("recomputed windows", extra={"windows": total})
            return total
