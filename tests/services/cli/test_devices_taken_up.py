"""Devices registered while the platform runs are taken up within a second, and let go when
removed: one on the city's broker, and the printers the bridge goes to (a PrusaLink printer it
polls, a Bambu printer whose own broker it connects to). Under `fabcity up` (SQLite,
everything in one process) and under `fabcity bridge` (its own process against PostgreSQL,
the API in another)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import Device, Flow
from tests.conftest import free_port, settings_for
from tests.services.cli.test_embedded import start_up
from tests.services.mqtt.test_bridge import bridge_env
from tests.support.api import city_client
from tests.support.city import CITY, SITE, event, flow
from tests.support.mqtt import publisher
from tests.support.procs import Proc, wait_until
from tests.support.servers import Mosquitto, serving

DEVICES = f"/v1/cities/{CITY}/sites/{SITE}/devices"
# The bridge learns of the registration within half a second; the link's first answer follows
# (a PrusaLink poll at once, a Bambu connection on loopback). The one-second target is measured
# by `python -m bench.registry_pickup`; here, on cores shared with the rest of the suite, the
# bound only holds the bridge to its next looks (before, a printer registered after the
# bridge started was never polled at all).
TAKEN_UP_S = 5.0


# The API over HTTP (`fabcity up`) or in the test's process (a TestClient is one).
Api = httpx.Client


class FakePrusaLink:
    """A PrusaLink printer's two endpoints: printing at the first poll, finished after; it
    counts the polls."""

    def __init__(self) -> None:
        self.polls = 0
        self.app = FastAPI()
        self.app.get("/api/v1/status")(self.status)
        self.app.get("/api/v1/job")(self.job)

    def state(self) -> str:
        return "PRINTING" if self.polls <= 1 else "FINISHED"

    def status(self) -> dict[str, Any]:
        self.polls += 1
        return {"printer": {"state": self.state()}}

    def job(self) -> dict[str, Any]:
        file = {"path": "/usb/bracket.bgcode", "meta": {"filament used [g]": 12.5}}
        return {"id": 7, "state": self.state(), "time_printing": 900, "file": file}


@pytest.fixture
def prusalink() -> Iterator[tuple[FakePrusaLink, str]]:
    printer = FakePrusaLink()
    with serving(printer.app) as url:
        yield printer, url


@pytest.fixture
def bambu_broker() -> Iterator[Mosquitto]:
    """A Bambu printer's own broker, in plain TCP (the link's `tls: false`)."""
    broker = Mosquitto()
    broker.start()
    yield broker
    broker.close()


def device(api: Api, slug: str) -> dict[str, Any]:
    for item in api.get(DEVICES).json()["items"]:
        if item["slug"] == slug:
            found: dict[str, Any] = item
            return found
    raise AssertionError(f"no device {slug}")


def since(api: Api, slug: str) -> datetime | None:
    value = device(api, slug)["listening_since"]
    return None if value is None else datetime.fromisoformat(value)


def register(api: Api, slug: str, adapter: str, settings: dict[str, Any]) -> datetime:
    body = {"slug": slug, "name": slug, "adapter": adapter, "settings": settings}
    answer = api.post(DEVICES, json=body)
    assert answer.status_code == 201, answer.text
    return datetime.now(UTC)


def produced(factory: sessionmaker[Session], slug: str) -> float:
    with transaction(factory) as s:
        total = s.scalar(
            select(func.sum(Flow.amount))
            .join(Device, Device.id == Flow.device_id)
            .where(Device.slug == slug, Flow.action == "produce", Flow.resource == "part")
        )
        return int(total or 0) / 1e6


def retire(factory: sessionmaker[Session], slug: str) -> None:
    with transaction(factory) as s:
        row = s.scalar(select(Device).where(Device.slug == slug))
        assert row is not None
        row.retired_at = datetime.now(UTC)


def consumed(factory: sessionmaker[Session], slug: str) -> float:
    with transaction(factory) as s:
        total = s.scalar(
            select(func.sum(Flow.amount))
            .join(Device, Device.id == Flow.device_id)
            .where(Device.slug == slug, Flow.action == "consume")
        )
        return int(total or 0) / 1e6


def a_device_on_the_city_broker_is_heard(
    api: Api, factory: sessionmaker[Session], broker_port: int
) -> None:
    """A scale speaking CloudEvents on its own topic, registered while the bridge runs."""
    topic = f"scale-{uuid.uuid4().hex[:8]}/events"
    at = register(api, "scale", "cloudevents", {"topic": topic})
    wait_until(lambda: since(api, "scale"), 10, step=0.05)
    listening = since(api, "scale")
    assert listening is not None and at <= listening <= at + timedelta(seconds=TAKEN_UP_S)
    client = publisher("127.0.0.1", broker_port)
    try:
        payload = event(flow(quantity=2.5), source="urn:scale:1", time=None)
        client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    wait_until(lambda: consumed(factory, "scale") == 2.5, 15)


def printers_are_taken_up_and_let_go(
    api: Api,
    factory: sessionmaker[Session],
    prusalink: tuple[FakePrusaLink, str],
    bambu_broker: Mosquitto,
) -> None:
    """Both printers registered while the platform runs: each is listened to within a
    second, each finished job counts one part; once retired, polling stops."""
    printer, url = prusalink
    serial = "B" + uuid.uuid4().hex[:10].upper()
    at = register(api, "mk4", "prusalink", {"url": url, "poll_interval_s": 1})
    bambu_settings = {
        "serial": serial,
        "host": "127.0.0.1",
        "port": bambu_broker.port,
        "access_code": "12345678",
        "tls": False,
    }
    bambu_at = register(api, "p1s", "bambu", bambu_settings)

    wait_until(lambda: since(api, "mk4") and since(api, "p1s"), 10, step=0.05)
    mk4, p1s = since(api, "mk4"), since(api, "p1s")
    assert mk4 is not None and at <= mk4 <= at + timedelta(seconds=TAKEN_UP_S)
    assert p1s is not None and bambu_at <= p1s <= bambu_at + timedelta(seconds=TAKEN_UP_S)

    # The printer reports a job over its own broker: running, then finished (Bambu's
    # `push_status`, as in tests/services/mqtt/test_adapters_e2e.py).
    report = f"device/{serial}/report"
    client = publisher("127.0.0.1", bambu_broker.port)
    try:
        for state in ("RUNNING", "FINISH"):
            body = {"print": {"command": "push_status", "gcode_state": state}}
            client.publish(report, json.dumps(body), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    # One job each, one part each: PrusaLink's PRINTING at the first poll, FINISHED at the
    # second (a second later); Bambu's RUNNING then FINISH.
    wait_until(lambda: produced(factory, "mk4") == 1 and produced(factory, "p1s") == 1, 15)
    assert device(api, "mk4")["online"] is True
    assert device(api, "p1s")["online"] is True

    # Retired: the poller stops within a second (a poll under way may still finish).
    retire(factory, "mk4")
    wait_until(lambda: since(api, "mk4") is None, 5, step=0.05)
    polls = printer.polls
    threading.Event().wait(2.5)  # more than two poll intervals
    assert printer.polls <= polls + 1


def test_devices_registered_after_a_separate_bridge_started_are_heard(
    pg_url: str,
    mosquitto: tuple[str, int],
    prusalink: tuple[FakePrusaLink, str],
    bambu_broker: Mosquitto,
) -> None:
    settings = settings_for(pg_url, mqtt_adapter_topics=[])
    bridge = Proc(["bridge"], bridge_env(settings, FABCITY_METRICS_PORT=str(free_port())))
    try:
        bridge.wait_for_output("MQTT connected", timeout=30)
        with city_client(pg_url) as api:
            a_device_on_the_city_broker_is_heard(api, api.factory, mosquitto[1])
            printers_are_taken_up_and_let_go(api, api.factory, prusalink, bambu_broker)
    finally:
        bridge.stop()


def test_devices_registered_under_fabcity_up_are_heard(
    tmp_path: Path, prusalink: tuple[FakePrusaLink, str], bambu_broker: Mosquitto
) -> None:
    up, api_port, mqtt_port = start_up(tmp_path)
    engine = make_engine(f"sqlite:///{tmp_path / 'fabcity.db'}")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as api:
            city = {"slug": CITY, "name": "Testville", "country": "ES", "timezone": "Europe/Madrid"}
            assert api.post("/v1/cities", json=city).status_code == 201
            assert api.post(f"/v1/cities/{CITY}/sites", json={"slug": SITE, "name": "Lab"})
            factory = make_sessionmaker(engine)
            a_device_on_the_city_broker_is_heard(api, factory, mqtt_port)
            printers_are_taken_up_and_let_go(api, factory, prusalink, bambu_broker)
    finally:
        engine.dispose()
        up.stop()
