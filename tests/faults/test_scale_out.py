"""Scale-out on one machine: two bridges in one shared-subscription group and two Celery
workers split the load, with no duplicates and no loss."""

from __future__ import annotations

import re
import urllib.request

import pytest

from fabcity.ingest.rebuild import rebuild
from tests.faults.conftest import EVENTS, Rig
from tests.support.procs import Proc, wait_until
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(600)


def scrape(port: int, metric: str, labels: str = "") -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    pattern = re.escape(metric) + (r"\{" + re.escape(labels) + r"\}" if labels else "")
    match = re.search(rf"^{pattern} ([0-9.e+]+)$", body, re.M)
    return float(match.group(1)) if match else 0.0


def test_two_bridges_and_two_workers_split_the_load_once(rig: Rig) -> None:
    ports = [free_port(), free_port()]
    bridges = [
        Proc(["bridge"], rig.env(FABCITY_MQTT_CLIENT_ID=f"scale-{i}", FABCITY_METRICS_PORT=str(p)))
        for i, p in enumerate(ports)
    ]
    worker_ports = [free_port(), free_port()]
    workers = [
        Proc(
            ["worker", "--concurrency", "1"],
            rig.env(FABCITY_METRICS_PORT=str(p)),
        )
        for p in worker_ports
    ]
    try:
        for b in bridges:
            b.wait_for_output("subscribed to")
        for w in workers:
            w.wait_for_output("ready.", timeout=60)
        publisher = rig.publisher(EVENTS, rate=4000, tag="s")
        assert publisher.wait(600) == 0
        wait_until(lambda: rig.count() >= EVENTS, timeout=300, step=0.2)
        wait_until(lambda: rig.unsettled() == 0, timeout=120, step=0.2)
        stored = [scrape(p, "fabcity_bridge_messages_total", 'outcome="stored"') for p in ports]
        duplicates = [
            scrape(p, "fabcity_bridge_messages_total", 'outcome="duplicate"') for p in ports
        ]
        # Recompute transactions each worker ran (nudges go to whichever worker is free; what
        # one claims the other skips). Windows per worker depend on timing: a faster bridge
        # sends fewer nudges, and one worker's loop may take every window of a short run.
        ran = [scrape(p, "fabcity_worker_recompute_seconds_count") for p in worker_ports]
    finally:
        for proc in [*bridges, *workers]:
            proc.stop()

    assert rig.count() == EVENTS
    assert sum(stored) == EVENTS
    assert duplicates == [0, 0]  # each message went to one bridge only
    # The broker split the group's messages between the two members.
    assert min(stored) > EVENTS * 0.25, stored
    assert all(r > 0 for r in ran), ran

    incremental = rig.rollups()
    rebuild(rig.factory)
    assert rig.rollups() == incremental
