"""Faults while QoS 1 events stream in: exactly N stored, rollups equal to a full rebuild.

The bridge is SIGKILLed three times; PostgreSQL (a cluster of the test's own) is restarted;
Redis goes away for a while; the Celery worker is SIGKILLed while it recomputes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil
import pytest
from sqlalchemy import text

from fabcity.ingest.rebuild import rebuild
from tests.faults.conftest import EVENTS, REDIS_DOWN_S, Rig
from tests.support.procs import Proc, wait_until

pytestmark = pytest.mark.timeout(900)


def sigkill(proc: Proc) -> None:
    """SIGKILL a process and every child it has (a Celery worker's pool, say)."""
    try:
        children = psutil.Process(proc.popen.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for p in children:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGKILL)
    proc.popen.send_signal(signal.SIGKILL)
    proc.popen.wait(10)
    proc.stop()


def test_bridge_killed_postgres_restarted_redis_gone_worker_killed_nothing_lost_or_doubled(
    rig: Rig,
) -> None:
    bridge = Proc(["bridge"], rig.env())
    bridge.wait_for_output("subscribed to")
    worker = Proc(["worker", "--concurrency", "1"], rig.env())
    # As deployed: one beat sweeps for dirty windows. Nudges are best effort (one sent while a
    # worker dies with it, or while Redis is away, is gone); the sweep is what finishes the work.
    beat = Proc(["beat"], rig.env())
    # A rate the bridge keeps up with, so the faults fall while events stream in.
    publisher = rig.publisher(EVENTS, rate=3000)
    kills = 0
    events_seen = 0
    try:

        def reached(share: float) -> None:
            nonlocal events_seen
            wait_until(lambda: rig.count() >= share * EVENTS, timeout=300, step=0.05)
            events_seen = rig.count()

        reached(0.10)
        sigkill(bridge)  # 1
        kills += 1
        bridge = Proc(["bridge"], rig.env())

        reached(0.20)
        rig.redis.stop()  # the nudges fail, the worker loses its broker; ingest goes on
        time.sleep(REDIS_DOWN_S)
        rig.redis.start()

        reached(0.30)
        # The worker rides out the outage by itself: the same process, never restarted.
        assert worker.popen.poll() is None, f"the worker died with Redis:\n{worker.output}"
        sigkill(bridge)  # 2
        kills += 1
        bridge = Proc(["bridge"], rig.env())

        reached(0.45)
        rig.postgres.restart()  # a fast shutdown: every session is cut, then it comes back

        reached(0.55)
        # Mid-task: wait for work to be there (the worker is at it while events keep coming).
        wait_until(lambda: rig.unsettled() > 0, timeout=60, step=0.01)
        assert worker.popen.poll() is None, f"the worker died:\n{worker.output}"
        sigkill(worker)
        worker = Proc(["worker", "--concurrency", "1"], rig.env())

        reached(0.70)
        sigkill(bridge)  # 3
        kills += 1
        bridge = Proc(["bridge"], rig.env())

        assert publisher.wait(600) == 0
        wait_until(lambda: rig.count() >= EVENTS, timeout=300, step=0.2)
        # Give redeliveries time to arrive: they must all be duplicates.
        time.sleep(2)
        wait_until(lambda: rig.unsettled() == 0, timeout=120, step=0.2)
    finally:
        publisher.kill()
        bridge.stop()
        worker.stop()
        beat.stop()

    assert kills == 3
    assert rig.count() == EVENTS
    assert rig.count("flows") == EVENTS  # one flow each, none doubled
    with rig.engine.connect() as conn:
        ids = conn.execute(text("SELECT count(DISTINCT event_id) FROM events")).scalar()
    assert ids == EVENTS
    assert rig.count("dead_letters") == 0

    incremental = rig.rollups()
    assert sum(len(rows) for rows in incremental.values()) > 0
    rebuild(rig.factory)
    assert rig.rollups() == incremental


def test_overload_stays_in_the_window_loses_nothing_and_drains(rig: Rig) -> None:
    """A backlog many times what the bridge can take at once: the broker holds it, the bridge
    holds at most its window, and everything is stored once it drains."""
    from fabcity.core.settings import Settings
    from services.mqtt.bridge import Bridge
    from workers.dispatch import NoDispatch

    window, batch = 1000, 100
    settings = Settings(**{k[8:].lower(): v for k, v in rig.env().items()})  # type: ignore[arg-type]
    settings = settings.model_copy(
        update={
            "mqtt_receive_maximum": window,
            "bridge_batch_size": batch,
            "mqtt_client_id": "faults-overload",
        }
    )
    bridge = Bridge(settings, rig.factory, NoDispatch()).start()
    wait_until(bridge.connected.is_set, 10)
    me = psutil.Process(os.getpid())
    before = me.memory_info().rss
    peak = before
    publisher = rig.publisher(EVENTS, rate=0, tag="o")
    # A drain that stalls fails the test, with what was stored, instead of hanging the suite.
    deadline = time.monotonic() + 300
    try:
        while (stored := rig.count()) < EVENTS:
            peak = max(peak, me.memory_info().rss)
            assert publisher.poll() in (None, 0)
            assert time.monotonic() < deadline, f"stalled: {stored} of {EVENTS} stored"
            time.sleep(0.05)
    finally:
        publisher.kill()
        publisher.wait()  # its return code is set once it is reaped: None until then
        bridge.stop()
    backlog_peak = publisher.returncode
    assert backlog_peak in (0, -9)
    assert rig.count() == EVENTS
    # The bridge's queue never held more than the broker's window for it.
    assert 0 < bridge.max_depth <= window
    # Memory follows the window, not the backlog: 20,000 or 200,000 events of ~230 bytes, and
    # the process grows by well under what holding them all would take (with Python objects
    # around each payload, several KiB per message).
    assert peak - before < 150 * 2**20
