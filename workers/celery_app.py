"""The Celery app on Redis. Tasks take no objects: they read what to do from the database."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from fabcity.db import make_engine, make_sessionmaker
from fabcity.settings import get_settings
from workers import jobs

settings = get_settings()
QUEUE = f"{settings.redis_prefix}recompute"

app = Celery("fabcity", broker=settings.redis_url)
app.conf.update(
    task_default_queue=QUEUE,
    # A task is acknowledged after it ran, so a worker killed mid-task leaves it for another;
    # recomputing a window twice is harmless (it is rebuilt from stored flows).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"global_keyprefix": settings.redis_prefix},
    beat_schedule={
        "sweep-dirty-windows": {
            "task": "fabcity.recompute_dirty_windows",
            "schedule": settings.recompute_interval_s,
            # A sweep older than its period is redundant with the next one.
            "options": {"expires": settings.recompute_interval_s},
        }
    },
)

_state: dict[str, Any] = {}


def _factory() -> sessionmaker[Session]:
    if "factory" not in _state:
        engine: Engine = make_engine(get_settings().database_url)
        _state["engine"] = engine
        _state["factory"] = make_sessionmaker(engine)
    factory: sessionmaker[Session] = _state["factory"]
    return factory


@worker_process_init.connect
def _fresh_pool_after_fork(**_: Any) -> None:
    # Connections must not be shared across fork(): each prefork child opens its own.
    engine = _state.pop("engine", None)
    if engine is not None:
        engine.dispose(close=False)
    _state.pop("factory", None)


@app.task(name="fabcity.recompute_dirty_windows")  # type: ignore[misc]
def recompute_dirty_windows() -> int:
    return jobs.recompute_dirty_windows(_factory(), get_settings().recompute_batch)
