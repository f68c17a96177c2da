"""Device adapters end to end: real Mosquitto, real PostgreSQL, the bridge, the one ingest
path, and the flows the metrics engine derives from what the adapters emit."""

from __future__ import annotations

import json
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters import sparkplug_b as pb
from fabcity.core.db import transaction
from fabcity.core.models import DeadLetter, Device, Event, Flow
from fabcity.core.settings import Settings
from fabcity.ingest.replay import replay
from fabcity.registry import entries
from schemas import api
from services.mqtt.bridge import Bridge
from services.mqtt.links import BambuLink, PrusaLinkPoller
from tests.conftest import free_port, settings_for
from tests.support.city import CITY, SITE
from tests.support.procs import wait_until
from workers.dispatch import NoDispatch


def add_device(
    factory: sessionmaker[Session], slug: str, adapter: str, kind: str = "printer", **settings: Any
) -> int:
    with transaction(factory) as s:
        site = entries.get_site(s, entries.get_city(s, CITY), SITE)
        body = api.DeviceIn(slug=slug, name=slug, kind=kind, adapter=adapter, settings=settings)
        return entries.create_device(s, site, body).id


def events_of(factory: sessionmaker[Session], device_id: int, kind: str) -> list[dict[str, Any]]:
    with transaction(factory) as s:
        rows = s.scalars(
            select(Event.payload)
            .where(Event.device_id == device_id, Event.type == kind)
            .order_by(Event.time)
        )
        return [dict(r) for r in rows]


def flows_of(factory: sessionmaker[Session], device_id: int) -> dict[tuple[str, str], float]:
    with transaction(factory) as s:
        rows = s.execute(
            select(Flow.action, Flow.resource, func.sum(Flow.amount))
            .where(Flow.device_id == device_id)
            .group_by(Flow.action, Flow.resource)
        )
        return {(a, r): int(amount) / 1e6 for a, r, amount in rows}


def device_row(factory: sessionmaker[Session], device_id: int) -> Device:
    with transaction(factory) as s:
        device = s.get(Device, device_id)
        assert device is not None
        return device


class Publisher:
    def __init__(self, host: str, port: int, tls: bool = False) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self.client.tls_set_context(context)
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, topic: str, payload: object, properties: Properties | None = None) -> None:
        if isinstance(payload, bytes):
            body = payload
        elif isinstance(payload, str):
            body = payload.encode()
        else:
            body = json.dumps(payload).encode()
        self.client.publish(topic, body, qos=1, properties=properties).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def tag() -> str:
    return "t" + uuid.uuid4().hex[:8]


def start_bridge(settings: Settings, factory: sessionmaker[Session]) -> Bridge:
    bridge = Bridge(settings, factory, NoDispatch()).start()
    wait_until(bridge.connected.is_set, 10)
    return bridge


def test_a_print_job_from_each_printer_family_becomes_events_and_flows(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int], tag: str
) -> None:
    octo = add_device(pg_factory, "mk3", "octoprint", base_topic=f"{tag}/octo", material="PLA")
    voron = add_device(pg_factory, "voron", "moonraker", instance_name=f"{tag}-voron")
    # A Bambu printer bridged into the city's broker (no `host`: the bridge does not dial it).
    x1 = add_device(pg_factory, "x1", "bambu", serial=f"{tag}X1")
    laser = add_device(pg_factory, "laser", "cloudevents", kind="laser", topic=f"{tag}/laser")
    settings = settings_for(pg_url, mqtt_adapter_topics=[])
    bridge = start_bridge(settings, pg_factory)
    pub = Publisher(*mosquitto)
    try:
        done = {"name": "b.gcode", "path": "b.gcode", "time": 5423.871, "_timestamp": 1767354324}
        pub.send(f"{tag}/octo/mqtt", "connected")
        pub.send(f"{tag}/octo/event/PrintDone", {**done, "_event": "PrintDone"})
        pub.send(f"{tag}/octo/event/PrintDone", {**done, "_event": "PrintDone"})  # a repeat

        status = f"{tag}-voron/klipper/status"
        stats = {"state": "printing", "filename": "a.gcode", "filament_used": 10.0}
        pub.send(status, {"eventtime": 3051555.377, "status": {"print_stats": stats}})
        end = {"state": "complete", "filament_used": 9874.02, "total_duration": 7581.66}
        pub.send(status, {"eventtime": 3057302.114, "status": {"print_stats": end}})

        report = f"device/{tag}X1/report"
        pub.send(
            report,
            {
                "print": {
                    "command": "push_status",
                    "gcode_state": "RUNNING",
                    "mc_percent": "3",
                    "sequence_id": "1",
                }
            },
        )
        pub.send(
            report,
            {
                "print": {
                    "command": "push_status",
                    "gcode_state": "FINISH",
                    "mc_percent": "100",
                    "sequence_id": "2",
                }
            },
        )

        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = "application/json"
        props.UserProperty = [
            ("specversion", "1.0"),
            ("id", f"{tag}-job-42"),
            ("source", "urn:fablab:machine:laser-01"),
            ("type", "fabcity.machine.job"),
            ("time", "2026-01-02T10:45:34Z"),
        ]
        job = {
            "status": "completed",
            "started": "2026-01-02T10:15:00Z",
            "ended": "2026-01-02T10:45:34Z",
            "energy_kwh": 0.8125,
        }
        pub.send(f"{tag}/laser", job, props)

        devices = (octo, voron, x1, laser)
        wait_until(
            lambda: all(events_of(pg_factory, d, "fabcity.machine.job") for d in devices), 20
        )
    finally:
        pub.close()
        bridge.stop()
    for device_id in devices:
        (event,) = events_of(pg_factory, device_id, "fabcity.machine.job")
        assert event["data"]["status"] == "completed"
        flows = flows_of(pg_factory, device_id)
        assert flows[("produce", "part")] == 1, (device_id, flows)
    # Durations from the messages (the others here ended milliseconds after they started).
    assert flows_of(pg_factory, octo)[("use", "machine_hours")] == pytest.approx(1.506631)
    assert flows_of(pg_factory, laser)[("use", "machine_hours")] == pytest.approx(0.509444)
    assert flows_of(pg_factory, voron)[("consume", "filament")] > 0.02  # 9.9 m of 1.75 mm
    assert flows_of(pg_factory, laser)[("consume", "electricity")] == pytest.approx(0.8125)
    assert device_row(pg_factory, octo).online is True
    assert device_row(pg_factory, octo).last_seen is not None


def test_a_tasmota_meter_reset_does_not_make_energy_negative(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int], tag: str
) -> None:
    plug = add_device(pg_factory, "plug", "tasmota", kind="meter", topic=f"{tag}-plug")
    settings = settings_for(pg_url, mqtt_adapter_topics=[])
    bridge = start_bridge(settings, pg_factory)
    pub = Publisher(*mosquitto)
    try:
        for minute, total in ((0, 412.734), (5, 413.0), (10, 0.05), (15, 0.3)):
            sensor = {"Time": f"2026-01-02T11:{minute:02d}:00", "ENERGY": {"Total": total}}
            pub.send(f"tele/{tag}-plug/SENSOR", sensor)
        wait_until(lambda: len(events_of(pg_factory, plug, "fabcity.meter.reading")) == 3, 20)
    finally:
        pub.close()
        bridge.stop()
    readings = [
        e["data"]["energy_kwh"] for e in events_of(pg_factory, plug, "fabcity.meter.reading")
    ]
    assert readings == pytest.approx([0.266, 0.05, 0.25])
    assert flows_of(pg_factory, plug)[("consume", "electricity")] == pytest.approx(0.566)


def nbirth(bdseq: int) -> bytes:
    metric = pb.Metric("bdSeq", None, 1767348900000, pb.INT64, bdseq)
    return pb.encode(pb.Payload(1767348900000, 0, (metric,)))


def test_a_sparkplug_node_death_marks_its_devices_offline(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int], tag: str
) -> None:
    node = add_device(
        pg_factory, "gw", "sparkplug", kind="gateway", group_id=tag, edge_node_id="gw"
    )
    cnc = add_device(
        pg_factory, "cnc", "sparkplug", kind="cnc", group_id=tag, edge_node_id="gw", device_id="cnc"
    )
    settings = settings_for(pg_url, mqtt_adapter_topics=[])
    bridge = start_bridge(settings, pg_factory)
    pub = Publisher(*mosquitto)
    base = f"spBv1.0/{tag}"
    try:
        pub.send(f"{base}/NBIRTH/gw", nbirth(7))
        dbirth = pb.Payload(1767348900000, 1, (pb.Metric("Running", 1, None, pb.BOOLEAN, False),))
        pub.send(f"{base}/DBIRTH/gw/cnc", pb.encode(dbirth))
        wait_until(lambda: device_row(pg_factory, cnc).online is True, 15)
        assert device_row(pg_factory, node).online is True
        death = pb.Payload(None, None, (pb.Metric("bdSeq", None, None, pb.INT64, 7),))
        pub.send(f"{base}/NDEATH/gw", pb.encode(death))
        wait_until(lambda: device_row(pg_factory, cnc).online is False, 15)
    finally:
        pub.close()
        bridge.stop()
    assert device_row(pg_factory, node).online is False
    statuses = [e["data"]["online"] for e in events_of(pg_factory, cnc, "fabcity.device.status")]
    assert statuses == [True, False]


def test_an_unregistered_device_is_dead_lettered_and_replayed_once_registered(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int], tag: str
) -> None:
    settings = settings_for(pg_url, mqtt_adapter_topics=[f"{tag}/#"])
    bridge = start_bridge(settings, pg_factory)
    pub = Publisher(*mosquitto)
    done = {"time": 60.0, "_event": "PrintDone", "_timestamp": 1767354324}
    try:
        pub.send(f"{tag}/octo/event/PrintDone", done)
        wait_until(lambda: bridge.adapters.dead_lettered == 1, 15)
    finally:
        pub.close()
        bridge.stop()
    with transaction(pg_factory) as s:
        (reason,) = s.scalars(select(DeadLetter.reason))
    assert "no registered device for topic" in reason
    octo = add_device(pg_factory, "mk3", "octoprint", base_topic=f"{tag}/octo")
    with transaction(pg_factory) as s:
        result = replay(s, None, settings.mqtt_topic_prefix)
    assert (result.ingested, result.still_dead, result.events) == (1, 0, 1)
    assert len(events_of(pg_factory, octo, "fabcity.machine.job")) == 1
    with transaction(pg_factory) as s:
        assert s.scalar(select(func.count()).select_from(DeadLetter)) == 0


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto of our own with a self-signed certificate, as a Bambu printer has."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bambu-printer",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        # `user root`: a Mosquitto started as root would otherwise drop to a user that
        # cannot read the key in pytest's private temporary directory.
        f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
        f"certfile {tmp_path / 'cert.pem'}\nkeyfile {tmp_path / 'key.pem'}\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _accepts(port), 10)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _accepts(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_a_bambu_printer_is_read_from_its_own_tls_broker(
    pg_factory: sessionmaker[Session], tls_broker: int, tag: str
) -> None:
    serial = f"{tag}P1S"
    add_device(
        pg_factory,
        "p1s",
        "bambu",
        serial=serial,
        host="127.0.0.1",
        port=tls_broker,
        access_code="12345678",
        material="PETG",
    )
    with transaction(pg_factory) as s:
        (device,) = entries.adapter_devices(s, "bambu")
    link = BambuLink(device, pg_factory, NoDispatch()).start()
    printer = Publisher("127.0.0.1", tls_broker, tls=True)
    try:
        wait_until(link.connected.is_set, 10)
        report = f"device/{serial}/report"
        printer.send(report, {"print": {"command": "push_status", "gcode_state": "RUNNING"}})
        printer.send(report, {"print": {"command": "push_status", "mc_percent": "50"}})
        printer.send(report, {"print": {"command": "push_status", "gcode_state": "FINISH"}})
        wait_until(lambda: events_of(pg_factory, device.id, "fabcity.machine.job"), 15)
        assert device_row(pg_factory, device.id).online is True
    finally:
        printer.close()
        link.stop()
    (job,) = events_of(pg_factory, device.id, "fabcity.machine.job")
    assert (job["data"]["status"], job["data"]["material"]) == ("completed", "PETG")
    assert flows_of(pg_factory, device.id)[("produce", "part")] == 1


def test_a_prusalink_printer_is_polled_into_a_job(
    pg_factory: sessionmaker[Session], pg_url: str
) -> None:
    add_device(pg_factory, "mk4", "prusalink", url="http://mk4.local", api_key="k")
    with transaction(pg_factory) as s:
        (device,) = entries.adapter_devices(s, "prusalink")
    states = iter(["PRINTING", "FINISHED"])
    current = {"state": "PRINTING"}

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-Api-Key"] == "k"
        if request.url.path == "/api/v1/status":
            current["state"] = next(states, "FINISHED")
            return httpx.Response(200, json={"printer": {"state": current["state"]}})
        file = {"path": "/usb/a.bgcode", "meta": {"filament used [g]": 12.5}}
        return httpx.Response(
            200, json={"id": 7, "state": current["state"], "time_printing": 900, "file": file}
        )

    poller = PrusaLinkPoller(device, pg_factory, NoDispatch())
    poller.http = httpx.Client(
        base_url="http://mk4.local",
        transport=httpx.MockTransport(answer),
        headers={"X-Api-Key": "k"},
    )
    poller.writer.start()
    for _ in range(2):
        poller.writer.queue.put(poller.poll())
    wait_until(lambda: events_of(pg_factory, device.id, "fabcity.machine.job"), 15)
    poller.writer.stop()
    (job,) = events_of(pg_factory, device.id, "fabcity.machine.job")
    assert job["data"]["mass_kg"] == pytest.approx(0.0125)
    assert flows_of(pg_factory, device.id)[("consume", "filament")] == pytest.approx(0.0125)


def shelly_switch(total_wh: float) -> dict[str, Any]:
    return {"id": 0, "output": True, "apower": 3.8, "aenergy": {"total": total_wh}}


def test_a_shelly_plug_is_read_through_the_broker(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int], tag: str
) -> None:
    prefix = f"{tag}-shellyplusplugs"
    plug = add_device(pg_factory, "shelly", "shelly", kind="meter", topic_prefix=prefix)
    settings = settings_for(pg_url, mqtt_adapter_topics=[])
    bridge = start_bridge(settings, pg_factory)
    pub = Publisher(*mosquitto)
    try:
        pub.send(f"{prefix}/online", "true")
        # aenergy.total is in Wh; 26,564.252 after 26,064.252 is half a kWh, and the
        # `Switch.ResetCounters` that follows starts again from 100 Wh.
        for total in (26064.252, 26564.252, 100.0):
            pub.send(f"{prefix}/status/switch:0", shelly_switch(total))
        wait_until(lambda: len(events_of(pg_factory, plug, "fabcity.meter.reading")) == 2, 20)
    finally:
        pub.close()
        bridge.stop()
    assert flows_of(pg_factory, plug)[("consume", "electricity")] == pytest.approx(0.6)
    assert device_row(pg_factory, plug).online is True


def test_an_esphome_meter_takes_its_unit_from_discovery_through_the_broker(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int], tag: str
) -> None:
    node = f"{tag}-lab-meter"
    meter = add_device(pg_factory, "esphome", "esphome", kind="meter", topic_prefix=node)
    settings = settings_for(pg_url, mqtt_adapter_topics=[])
    bridge = start_bridge(settings, pg_factory)
    pub = Publisher(*mosquitto)
    state = f"{node}/sensor/energy/state"
    config = {"state_topic": state, "unit_of_measurement": "Wh", "device_class": "energy"}
    try:
        pub.send(f"{node}/status", "online")
        pub.send(f"homeassistant/sensor/{node}/energy/config", config)
        wait_until(lambda: device_row(pg_factory, meter).online is True, 20)
        for value in ("1000", "2500"):
            pub.send(state, value)
        wait_until(lambda: len(events_of(pg_factory, meter, "fabcity.meter.reading")) == 1, 20)
    finally:
        pub.close()
        bridge.stop()
    # Plain state values in Wh, per the discovery config: 1,500 Wh between the two.
    assert flows_of(pg_factory, meter)[("consume", "electricity")] == pytest.approx(1.5)
