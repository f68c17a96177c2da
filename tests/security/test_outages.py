"""Outages: Redis goes away, or hangs, under a running platform.

- The Celery worker rides out Redis stopping and freezing by itself, with nudges held for their
  countdown when Redis drops (what ended the worker with "Unrecoverable error: 'NoneType'
  object has no attribute 'hostname'"), and recomputes once Redis is back.
- Ingest never waits on Redis: with Redis frozen (SIGSTOP), `POST /v1/events` answers as fast
  as ever and stores the events; the nudges are sent once Redis answers again.

Each test runs a Redis of its own (tests/support/servers.py), stopped and frozen at will.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import threading
import time
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import Event, FlowRollup
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.city import event, flow, register
from tests.support.procs import Proc, wait_until
from tests.support.servers import Redis
from workers.dispatch import CeleryDispatcher

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def redis() -> Iterator[Redis]:
    """A Redis server of the test's own, to stop and freeze."""
    if shutil.which("redis-server") is None:
        message = "the outage tests start their own redis-server; install it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = Redis()
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.proc.send_signal(signal.SIGCONT)  # a frozen server would not stop
        server.close()


def freeze(redis: Redis) -> None:
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGSTOP)


def thaw(redis: Redis) -> None:
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGCONT)


def test_the_worker_rides_out_redis_stopping_and_freezing_and_recomputes_after(
    pg_url: str, redis: Redis
) -> None:
    settings = settings_for(pg_url, worker_mode="celery", redis_url=redis.url)
    engine = make_engine(pg_url)
    factory = make_sessionmaker(engine)
    register(factory)
    worker = Proc(
        ["worker", "--concurrency", "1"],
        {
            "FABCITY_DATABASE_URL": pg_url,
            "FABCITY_REDIS_URL": redis.url,
            "FABCITY_REDIS_PREFIX": settings.redis_prefix,
            "FABCITY_WORKER_MODE": "celery",
        },
    )
    from workers.celery_app import RECOMPUTE, make_celery

    sender = make_celery(settings)

    def hold_nudges(n: int) -> None:
        """Tasks with a countdown, as nudges are sent: the worker holds them, unacknowledged,
        until they are due."""
        seen = worker.output.count("received")
        for _ in range(n):
            sender.send_task(RECOMPUTE, countdown=4)
        wait_until(lambda: worker.output.count("received") >= seen + n, timeout=30)

    def alive() -> bool:
        return worker.popen.poll() is None

    try:
        worker.wait_for_output("ready", timeout=60)

        hold_nudges(3)
        redis.stop()  # the connection drops while the worker holds the nudges
        time.sleep(2)
        redis.start()
        time.sleep(3)
        assert alive(), f"the worker died when Redis stopped:\n{worker.output}"

        hold_nudges(3)
        freeze(redis)  # a hang, longer than the broker's socket timeout
        time.sleep(8)
        thaw(redis)
        time.sleep(3)
        assert alive(), f"the worker died when Redis froze:\n{worker.output}"

        # Once Redis is back, the same worker does the work a nudge asks for.
        client = TestClient(create_app(settings, "both", factory=factory))
        response = client.post(
            "/v1/events",
            content=orjson.dumps(event(flow(quantity=2))),
            headers={"content-type": "application/cloudevents+json"},
        )
        assert response.status_code == 202, response.text

        def recomputed() -> bool:
            with transaction(factory) as s:
                return bool(s.scalar(select(func.count()).select_from(FlowRollup)))

        wait_until(recomputed, timeout=60, step=0.2)
        assert alive()
        assert "Unrecoverable" not in worker.output
    finally:
        worker.stop()
        engine.dispose()


def test_ingest_answers_fast_and_stores_while_redis_is_frozen(pg_url: str, redis: Redis) -> None:
    settings = settings_for(pg_url, worker_mode="celery", redis_url=redis.url)
    engine = make_engine(pg_url)
    factory = make_sessionmaker(engine)
    register(factory)
    dispatcher = CeleryDispatcher(settings)
    client = TestClient(create_app(settings, "both", factory=factory, dispatcher=dispatcher))

    import redis as redis_py

    direct = redis_py.Redis.from_url(redis.url)
    # Where the nudges land: the recompute queue (kombu prefixes it with the key prefix too).
    queue = f"{settings.redis_prefix}{settings.redis_prefix}recompute"

    def post_one() -> float:
        started = time.perf_counter()
        response = client.post(
            "/v1/events",
            content=orjson.dumps(event(flow(quantity=1))),
            headers={"content-type": "application/cloudevents+json"},
        )
        assert response.status_code == 202, response.text
        return time.perf_counter() - started

    try:
        post_one()  # Redis answers: a nudge goes out
        wait_until(lambda: direct.llen(queue) >= 1, timeout=10)

        freeze(redis)
        # Whatever happens below, Redis thaws: a write that waited on it would wait this long.
        thawing = threading.Timer(15, thaw, args=(redis,))
        thawing.start()
        latencies = [post_one() for _ in range(30)]
        thawed_early = thawing.is_alive()
        thawing.cancel()
        thaw(redis)
        assert thawed_early, "the writes waited for Redis to thaw"
        p50, worst = statistics.median(latencies), max(latencies)
        assert worst < 1.0, f"p50 {p50 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
        assert p50 < 0.25, f"p50 {p50 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
        with transaction(factory) as s:
            assert s.scalar(select(func.count()).select_from(Event)) == 31

        # Back to normal: nudges reach Redis again (the periodic sweep needs none of them).
        queued = direct.llen(queue)

        def nudged() -> bool:
            post_one()
            return int(direct.llen(queue)) > queued

        wait_until(nudged, timeout=30, step=0.5)
    finally:
        thaw(redis)
        direct.close()
        client.close()
        engine.dispose()
