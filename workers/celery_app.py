"""The Celery app on Redis. Tasks take no objects: they read what to do from the database."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu.transport import redis as kombu_redis
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core import gc_tuning
from fabcity.core.db import make_engine, make_sessionmaker
from fabcity.core.settings import Settings, get_settings
from workers import jobs

RECOMPUTE = "fabcity.recompute_dirty_windows"
DELIVER_WEBHOOKS = "fabcity.deliver_webhooks"
# Webhooks are swept this often; a failed delivery waits for its backoff on top.
WEBHOOK_SWEEP_S = 1.0
# A Redis that does not answer within this is treated as gone (the worker reconnects, a sender
# gives up); longer than the worker's 1 s BRPOP, which waits on the socket by design.
REDIS_TIMEOUT_S = 5.0


class _QoS(kombu_redis.QoS):
    """Unacknowledged messages stay in Redis when a channel closes; Redis hands them out again
    after the visibility timeout.

    Putting them back on close is what kombu does by default, and on a lost connection (with a
    nudge held for its countdown, or a task running) Celery 5.7 closes the channel a second
    time after clearing the transport's client, and the restore then fails with "'NoneType'
    object has no attribute 'hostname'": an unrecoverable error that ends the worker. Nothing
    is lost without the restore: every task here only asks for a sweep that runs anyway, and
    a late redelivery recomputes what is already right."""

    restore_at_shutdown = False


class _Channel(kombu_redis.Channel):
    QoS = _QoS


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport, without the restore on close (see `_QoS`)."""

    Channel = _Channel


def make_celery(settings: Settings) -> Celery:
    """A Celery app for `settings`: the worker's, or a light one that only sends tasks."""
    celery = Celery("fabcity", broker=settings.redis_url)
    celery.conf.update(
        broker_transport=f"{__name__}:RedisTransport",
        # The worker outlives any Redis outage: it reconnects for as long as it takes (the
        # default gives up after 100 tries, and the worker exits).
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # Without timeouts a frozen Redis (or a half-open connection to a lost host) holds a
        # worker, a beat or a sender forever; with them it is a connection error, then a retry.
        broker_transport_options={
            "global_keyprefix": settings.redis_prefix,
            "socket_timeout": REDIS_TIMEOUT_S,
            "socket_connect_timeout": REDIS_TIMEOUT_S,
            "socket_keepalive": True,
            "health_check_interval": 10,
        },
        # A task running when Redis drops finishes its database work (its ack is lost, and
        # Redis hands it out once more later: a recompute of what is already right).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_queue=f"{settings.redis_prefix}recompute",
        # A task is acknowledged after it ran, so a worker killed mid-task leaves it for
        # another; recomputing a window twice is harmless (it is rebuilt from stored flows).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "sweep-dirty-windows": {
                "task": RECOMPUTE,
                "schedule": settings.recompute_interval_s,
                # A sweep older than its period is redundant with the next one.
                "options": {"expires": settings.recompute_interval_s},
            },
            "deliver-webhooks": {
                "task": DELIVER_WEBHOOKS,
                "schedule": WEBHOOK_SWEEP_S,
                "options": {"expires": WEBHOOK_SWEEP_S},
            },
        },
    )
    return celery


app = make_celery(get_settings())
_state: dict[str, sessionmaker[Session]] = {}


def _factory() -> sessionmaker[Session]:
    if "factory" not in _state:
        _state["factory"] = make_sessionmaker(make_engine(get_settings().database_url))
    return _state["factory"]


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_pool_after_fork(**_: Any) -> None:
    # Connections must not be shared across fork(): each prefork child opens its own.
    factory = _state.pop("factory", None)
    if factory is not None:
        factory.kw["bind"].dispose(close=False)
    gc_tuning.tune()


@app.task(name=RECOMPUTE)  # type: ignore[untyped-decorator]
def recompute_dirty_windows() -> int:
    return jobs.recompute_dirty_windows(_factory(), get_settings().recompute_batch)


@app.task(name=DELIVER_WEBHOOKS)  # type: ignore[untyped-decorator]
def deliver_webhooks() -> int:
    from workers import webhooks

    return webhooks.deliver_due(_factory(), get_settings())
