"""The scenario (`scenario.py`) through a Mosquitto of its own (the shipped configuration,
which queues what a persistent session has not taken), `fabcity bridge` as a real process,
and PostgreSQL, under three conditions. Each must give the figures derived by hand, so the
three give the same figures:

- live: the bridge runs while the devices publish;
- backlog: the bridge subscribes once, stops, the devices publish 10,000 messages (QoS 1) into
  its persistent session, and the bridge starts again;
- restart: the bridge is SIGKILLed in mid-job (every job started, none ended, the filler still
  arriving) and started again;
- and the narrowest restart: the bridge dies right after committing a batch of device
  messages and before acknowledging it, twice (in mid-job, and as the jobs end), so the broker
  delivers those batches again to states that have taken them in.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter, Device, DeviceState, Event, Flow
from fabcity.migrations import upgrade
from fabcity.registry import entries
from schemas import api
from tests.conftest import PG_ADMIN_URL, need
from tests.replay import scenario
from tests.replay.scenario import Figure, Publish
from tests.support.faulty_bridge import EXIT_AFTER_COMMIT, LANE_FAULT_TOPIC
from tests.support.procs import FAULTY_BRIDGE, Proc, wait_until
from tests.support.servers import Database, Mosquitto

pytestmark = pytest.mark.timeout(240)

CITY = "testville"
# One fixed client id: the broker keeps this bridge's session between its runs.
CLIENT_ID = "replay-bridge"
# How long the whole scenario may take to be stored once published.
SETTLE_S = 90
# Nothing stored for this long: what was published has been taken in.
QUIET_S = 8


class PrusaLinkPrinter:
    """A PrusaLink printer's two endpoints, answering whatever state the test moves it to."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {"status": {"printer": {"state": "IDLE"}}, "job": None}
        printer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                key = {"/api/v1/status": "status", "/api/v1/job": "job"}.get(self.path)
                body = printer.answers.get(key) if key else None
                if key == "job" and body is None:
                    self.send_response(204)  # no job
                    self.end_headers()
                    return
                data = orjson.dumps(body)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class City:
    """One condition's world: a broker, a database with the city registered, a printer."""

    def __init__(self) -> None:
        self.broker = Mosquitto().start()
        self.db = Database("fabcity_replay", PG_ADMIN_URL)
        upgrade.upgrade(self.db.url)
        self.engine = make_engine(self.db.url)
        self.factory: sessionmaker[Session] = make_sessionmaker(self.engine)
        self.printer = PrusaLinkPrinter()
        self._register()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="replay-devices", protocol=mqtt.MQTTv5
        )
        # The devices' side: QoS 1 with a wide window, so 10,000 messages go out in seconds.
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.loop_start()
        self.bridges: list[Proc] = []

    def _register(self) -> None:
        with transaction(self.factory) as s:
            city = entries.create_city(
                s, api.CityIn(slug=CITY, name="Testville", country="ES", timezone="Europe/Madrid")
            )
            sites = {
                slug: entries.create_site(s, city, api.SiteIn(slug=slug, name=slug))
                for slug in ("lab", "hub")
            }
            for d in scenario.devices(self.printer.url):
                body = api.DeviceIn(
                    slug=d.slug, name=d.slug, kind=d.kind, adapter=d.adapter, settings=d.settings
                )
                entries.create_device(s, sites[d.site], body)

    # the bridge ---------------------------------------------------------------------------

    def start_bridge(self, dies_after_committing: str | None = None) -> Proc:
        """`fabcity bridge`; or one that dies between the commit of the device batch holding
        a message on `dies_after_committing` and its acknowledgement."""
        env = {
            "FABCITY_DATABASE_URL": self.db.url,
            "FABCITY_MQTT_HOST": "127.0.0.1",
            "FABCITY_MQTT_PORT": str(self.broker.port),
            "FABCITY_MQTT_CLIENT_ID": CLIENT_ID,
            "FABCITY_WORKER_MODE": "local",
        }
        if dies_after_committing is None:
            bridge = Proc(["bridge"], env)
        else:
            env[LANE_FAULT_TOPIC] = dies_after_committing
            bridge = Proc(["bridge"], env, program=FAULTY_BRIDGE)
        self.bridges.append(bridge)
        bridge.wait_for_output("subscribed to")
        return bridge

    # the devices --------------------------------------------------------------------------

    def publish(self, messages: list[Publish]) -> None:
        infos = [self.client.publish(m.topic, m.payload, qos=1, retain=m.retain) for m in messages]
        for info in infos:
            info.wait_for_publish(30)

    # what was stored ----------------------------------------------------------------------

    def state_of(self, slug: str) -> dict[str, Any]:
        with transaction(self.factory) as s:
            found = s.scalar(
                select(DeviceState.state)
                .join(Device, Device.id == DeviceState.device_id)
                .where(Device.slug == slug)
            )
            return dict(found or {})

    def events(self) -> dict[str, int]:
        with transaction(self.factory) as s:
            rows = s.execute(select(Event.type, func.count()).group_by(Event.type))
            return {t: int(n) for t, n in rows}

    def figures(self) -> dict[Figure, float]:
        with transaction(self.factory) as s:
            rows = s.execute(
                select(Device.slug, Flow.action, Flow.resource, Flow.state, func.sum(Flow.amount))
                .join(Device, Device.id == Flow.device_id)
                .group_by(Device.slug, Flow.action, Flow.resource, Flow.state)
            )
            return {(d, a, r, st): int(amount) / 1e6 for d, a, r, st, amount in rows}

    def dead_letters(self) -> list[str]:
        with transaction(self.factory) as s:
            return [f"{t}: {r}" for t, r in s.execute(select(DeadLetter.topic, DeadLetter.reason))]

    def close(self) -> None:
        for bridge in self.bridges:
            bridge.stop()
        self.client.loop_stop()
        self.client.disconnect()
        self.printer.close()
        self.engine.dispose()
        self.db.close()
        self.broker.close()


@pytest.fixture
def city() -> Iterator[City]:
    need("PostgreSQL", "127.0.0.1", 5432)
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        message = "the replay runs a Mosquitto of its own: apt-get install mosquitto"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    world = City()
    try:
        yield world
    finally:
        world.close()


def mid_job(city: City) -> bool:
    """Every job has started, as the stored device states say."""
    return (
        "job_started" in city.state_of("mk3")
        and city.state_of("voron").get("print_state") == "printing"
        and city.state_of("x1c").get("gcode_state") == "RUNNING"
        and "job_started" in city.state_of("cnc")
        and city.state_of("mk4").get("job_state") == "PRINTING"
    )


def mk4_printing(city: City) -> None:
    """The MK4 starts printing; wait until its poller has seen it."""
    city.printer.answers = scenario.prusalink_printing()
    wait_until(lambda: city.state_of("mk4").get("job_state") == "PRINTING", 20)


def settled(city: City) -> None:
    """Wait until every expected event is stored (or nothing more comes for a while), and a
    little longer for any extra."""
    total = sum(scenario.EXPECTED_EVENTS.values())
    deadline = time.monotonic() + SETTLE_S
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sum(city.events().values())
        if count >= total:
            break
        if count != last:
            last, still_since = count, time.monotonic()
        elif time.monotonic() - still_since > QUIET_S:
            break
        time.sleep(0.5)
    time.sleep(1.5)


def check(city: City) -> None:
    figures = city.figures()
    wrong = {
        f: (figures.get(f), e)
        for f, e in scenario.EXPECTED.items()
        if figures.get(f) != pytest.approx(e, abs=1e-6)
    }
    assert city.dead_letters() == []
    assert city.events() == scenario.EXPECTED_EVENTS, f"figures (found, expected): {wrong}"
    for figure in scenario.MODELLED_BY_RECEIPT:
        assert figure in figures, figure  # stated modelled, whatever its value
        figures.pop(figure)
    assert figures.keys() == scenario.EXPECTED.keys()
    for figure, expected in scenario.EXPECTED.items():
        assert figures[figure] == pytest.approx(expected, abs=1e-6), figure


def test_live(city: City) -> None:
    city.start_bridge()
    mk4_printing(city)
    city.publish(scenario.phase_a())
    city.publish(scenario.filler())
    city.publish(scenario.phase_b())
    city.printer.answers = scenario.prusalink_finished()
    settled(city)
    check(city)


def test_backlog_of_ten_thousand_queued_while_the_bridge_was_down(city: City) -> None:
    # The bridge subscribes once (its session), then is stopped.
    city.start_bridge().stop()
    messages = [*scenario.phase_a(), *scenario.filler(), *scenario.phase_b()]
    assert len(messages) == scenario.BACKLOG
    city.publish(messages)
    city.start_bridge()
    # PrusaLink is polled over HTTP: nothing of it waits at the broker.
    mk4_printing(city)
    city.printer.answers = scenario.prusalink_finished()
    settled(city)
    check(city)


def test_bridge_killed_in_mid_job(city: City) -> None:
    first = city.start_bridge()
    mk4_printing(city)
    city.publish(scenario.phase_a())
    wait_until(lambda: mid_job(city), 30)
    # Killed while it takes in the filler: some of it committed and unacknowledged, some
    # in flight, the rest queued in its session.
    city.publish(scenario.filler()[:2000])
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(10)
    city.publish(scenario.filler()[2000:])
    city.start_bridge()
    city.publish(scenario.phase_b())
    city.printer.answers = scenario.prusalink_finished()
    settled(city)
    check(city)


def test_bridge_dead_between_a_commit_and_its_acknowledgement(city: City) -> None:
    # The broker delivers the batch again, flagged as a redelivery, to states that have
    # already taken it in: counters past their totals, scales past their weights, jobs begun.
    # Each death is set off by a topic only its phase has.
    first = city.start_bridge(dies_after_committing="stat/pow1/STATUS8")
    mk4_printing(city)
    city.publish(scenario.phase_a())
    assert first.popen.wait(30) == EXIT_AFTER_COMMIT
    second = city.start_bridge(dies_after_committing="trident/moonraker/api/response")
    wait_until(lambda: mid_job(city), 30)
    city.publish(scenario.phase_b())
    assert second.popen.wait(30) == EXIT_AFTER_COMMIT
    city.publish(scenario.filler())
    city.start_bridge()
    city.printer.answers = scenario.prusalink_finished()
    settled(city)
    check(city)
