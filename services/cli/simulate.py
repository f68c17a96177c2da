"""A simulated city: fab labs that post their reports over HTTP and machines that publish
over MQTT, with realistic flows (filament from the recycling hub or from far away, plywood
from the region, offcuts composted or landfilled, parts made and repaired)."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

CITY = {
    "slug": "demo-city",
    "name": "Demo City (simulated)",
    "country": "ES",
    "timezone": "Europe/Madrid",
    "population": 250_000,
}


@dataclass(frozen=True)
class SimDevice:
    site: str
    slug: str
    name: str
    kind: str


SITES = [
    {
        "slug": "fablab-centre",
        "name": "Fab Lab Centre",
        "kind": "fablab",
        "latitude": 41.3851,
        "longitude": 2.1734,
    },
    {
        "slug": "makers-north",
        "name": "Makers North",
        "kind": "makerspace",
        "latitude": 41.4036,
        "longitude": 2.1744,
    },
    {
        "slug": "plastic-hub",
        "name": "Precious Plastic Hub",
        "kind": "recycling_hub",
        "latitude": 41.3902,
        "longitude": 2.1540,
    },
    {
        "slug": "bench-works",
        "name": "Bench Works",
        "kind": "urban_factory",
        "latitude": 41.3760,
        "longitude": 2.1490,
    },
]
DEVICES = [
    SimDevice("fablab-centre", "printer-1", "Prusa MK4", "printer"),
    SimDevice("fablab-centre", "laser-1", "Laser cutter", "laser"),
    SimDevice("makers-north", "printer-2", "Voron 2.4", "printer"),
    SimDevice("bench-works", "cnc-1", "CNC router", "cnc"),
]
# Machines that report in their own event types rather than as flows.
JOB_PRINTER = SimDevice("makers-north", "printer-3", "Prusa MK3S (job reports)", "printer")
METER = SimDevice("bench-works", "meter-1", "Energy meter", "meter")


def flow(
    action: str, resource: str, quantity: float, unit: str, ring: str, **extra: Any
) -> dict[str, Any]:
    return {
        "action": action,
        "resource": resource,
        "quantity": round(quantity, 3),
        "unit": unit,
        "ring": ring,
        **extra,
    }


def device_flows(device: SimDevice, rnd: random.Random) -> list[dict[str, Any]]:
    """What one finished job on a machine consumed, made and threw away."""
    job = uuid.UUID(int=rnd.getrandbits(128)).hex[:12]
    if device.kind == "printer":
        local = rnd.random() < 0.45
        grams = rnd.uniform(20, 400)
        return [
            flow(
                "consume",
                "filament",
                grams,
                "g",
                "city" if local else "beyond",
                recycled=local,
                material="rPETG" if local else "PLA",
                job=job,
            ),
            flow(
                "produce",
                "part",
                rnd.randint(1, 6),
                "count",
                "city",
                job=job,
                **(
                    {"design": "https://github.com/opensourceecology/okh/bracket.yml"}
                    if rnd.random() < 0.6
                    else {}
                ),
            ),
            flow(
                "discard",
                "filament",
                grams * rnd.uniform(0.03, 0.12),
                "g",
                "city",
                fate="recycle",
                job=job,
            ),
        ]
    if device.kind == "laser":
        kg = rnd.uniform(0.5, 4)
        return [
            flow("consume", "wood", kg, "kg", "region", material="birch plywood", job=job),
            flow("produce", "part", rnd.randint(2, 20), "count", "city", job=job),
            flow(
                "discard",
                "wood",
                kg * rnd.uniform(0.1, 0.3),
                "kg",
                "city",
                fate=rnd.choice(["compost", "energy", "landfill"]),
                job=job,
            ),
        ]
    kg = rnd.uniform(1, 8)
    return [
        flow(
            "consume",
            "metal",
            kg,
            "kg",
            rnd.choice(["region", "beyond"]),
            material="aluminium",
            job=job,
        ),
        flow("produce", "part", rnd.randint(1, 4), "count", "city", job=job),
        flow("discard", "metal", kg * rnd.uniform(0.1, 0.4), "kg", "city", fate="recycle", job=job),
    ]


def site_report(site: str, rnd: random.Random) -> list[dict[str, Any]]:
    """What people at a site post: repairs, collected plastic, work hours, designs."""
    if site == "plastic-hub":
        kg = rnd.uniform(5, 30)
        return [
            flow("consume", "plastic", kg, "kg", "city", material="HDPE caps"),
            flow("recover", "recycled_plastic", kg * 0.85, "kg", "city"),
            flow("discard", "plastic", kg * 0.15, "kg", "city", fate="incineration"),
        ]
    return [
        flow("modify", "furniture", rnd.randint(0, 3), "count", "city"),
        flow("work", "work_hours", rnd.uniform(4, 30), "h", "site"),
        flow("cite", "design", rnd.randint(0, 4), "count", "beyond"),
        flow("publish", "design", rnd.randint(0, 2), "count", "beyond"),
    ]


def job(rnd: random.Random, ended: datetime) -> dict[str, Any]:
    """A print job as a printer reports it: filament length only, so its mass is modelled."""
    minutes = rnd.randint(20, 240)
    return {
        "status": "completed" if rnd.random() < 0.9 else "failed",
        "started": (ended - timedelta(minutes=minutes)).isoformat(),
        "ended": ended.isoformat(),
        "material": rnd.choice(["PLA", "PETG"]),
        "length_mm": round(rnd.uniform(2_000, 60_000)),
        "energy_kwh": round(minutes / 60 * 0.12, 3),
    }


def envelope(
    source: str, event_id: str, time: datetime, data: Any, type_: str = "fabcity.flow"
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": type_,
        "time": time.isoformat(),
        "data": data,
    }


class Simulator:
    def __init__(
        self,
        api: str,
        mqtt_host: str,
        mqtt_port: int,
        mqtt_protocol: str = "5",
        prefix: str = "fabcity/v1",
        seed: int | None = None,
        api_key: str | None = None,
    ) -> None:
        self.api = api.rstrip("/")
        # An admin key: the simulator registers its city before it reports.
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.http = httpx.Client(base_url=self.api, timeout=30, headers=headers)
        self.prefix = prefix
        self.city = CITY["slug"]
        self.rnd = random.Random(seed)
        self.published = 0
        self.posted = 0
        # The history always ends at the same counter; live readings continue from there.
        self.meter_total = 10_000.0
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fabcity-sim-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if mqtt_protocol == "5" else mqtt.MQTTv311,
        )
        self.mqtt_host, self.mqtt_port = mqtt_host, mqtt_port

    def setup(self) -> None:
        """Register the city, its sites and devices (what exists already is left alone)."""
        self._create("/v1/cities", CITY)
        for site in SITES:
            self._create(f"/v1/cities/{self.city}/sites", site)
        for d in [*DEVICES, JOB_PRINTER, METER]:
            self._create(
                f"/v1/cities/{self.city}/sites/{d.site}/devices",
                {"slug": d.slug, "name": d.name, "kind": d.kind},
            )
        self.mqtt.connect(self.mqtt_host, self.mqtt_port)
        self.mqtt.loop_start()

    def _create(self, path: str, body: dict[str, Any]) -> None:
        response = self.http.post(path, json=body)
        if response.status_code not in (201, 409):
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")

    def backfill(self, days: int) -> None:
        """Post `days` of history over HTTP. Ids are fixed, so a restart adds no duplicates."""
        now = datetime.now(UTC)
        history = random.Random(7)
        for back in range(days, 0, -1):
            day = now - timedelta(days=back)
            batch = []
            for n in range(history.randint(10, 24)):
                when = day.replace(hour=history.randint(8, 20), minute=history.randint(0, 59))
                d = history.choice(DEVICES)
                source = f"/{self.city}/{d.site}/{d.slug}"
                batch.append(
                    envelope(source, f"history-{back}-{n}", when, device_flows(d, history))
                )
            for site in SITES:
                source = f"/{self.city}/{site['slug']}"
                batch.append(
                    envelope(
                        source,
                        f"history-{back}-{site['slug']}",
                        day,
                        site_report(str(site["slug"]), history),
                    )
                )
            for k in range(history.randint(1, 4)):
                ended = day.replace(hour=history.randint(9, 21), minute=history.randint(0, 59))
                batch.append(
                    envelope(
                        self._source(JOB_PRINTER),
                        f"history-{back}-job-{k}",
                        ended,
                        job(history, ended),
                        "fabcity.machine.job",
                    )
                )
            for hour in (6, 12, 18, 23):
                self.meter_total += history.uniform(1, 6)
                batch.append(
                    self._reading(f"history-{back}-meter-{hour}", day.replace(hour=hour, minute=0))
                )
            self._post(batch)

    def _source(self, device: SimDevice) -> str:
        return f"/{self.city}/{device.site}/{device.slug}"

    def _reading(self, event_id: str, when: datetime) -> dict[str, Any]:
        """The meter's cumulative counter, in kWh."""
        data = {"energy_kwh_total": round(self.meter_total, 3)}
        return envelope(self._source(METER), event_id, when, data, "fabcity.meter.reading")

    def _post(self, batch: list[dict[str, Any]]) -> None:
        response = self.http.post(
            "/v1/events",
            content=orjson.dumps(batch),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/events: {response.status_code} {response.text}")
        self.posted += response.json()["accepted"]

    def tick(self) -> None:
        """A few machines finish jobs (MQTT); now and then a site posts a report (HTTP)."""
        now = datetime.now(UTC)
        for d in self.rnd.sample(DEVICES, k=self.rnd.randint(1, len(DEVICES))):
            event = envelope(self._source(d), uuid.uuid4().hex, now, device_flows(d, self.rnd))
            self._publish(d, event)
        self.meter_total += self.rnd.uniform(0.05, 0.4)
        self._publish(METER, self._reading(uuid.uuid4().hex, now))
        if self.rnd.random() < 0.3:
            data = job(self.rnd, now)
            self._publish(
                JOB_PRINTER,
                envelope(
                    self._source(JOB_PRINTER), uuid.uuid4().hex, now, data, "fabcity.machine.job"
                ),
            )
        if self.rnd.random() < 0.3:
            site = self.rnd.choice(SITES)
            source = f"/{self.city}/{site['slug']}"
            self._post(
                [envelope(source, uuid.uuid4().hex, now, site_report(str(site["slug"]), self.rnd))]
            )

    def _publish(self, device: SimDevice, event: dict[str, Any]) -> None:
        topic = f"{self.prefix}/{self.city}/{device.site}/{device.slug}/events"
        self.mqtt.publish(topic, orjson.dumps(event), qos=1)
        self.published += 1

    def run(self, interval: float, stop: threading.Event, ticks: int | None = None) -> None:
        done = 0
        while not stop.is_set() and (ticks is None or done < ticks):
            try:
                self.tick()
            except Exception as exc:  # a hiccup of the API must not end the simulation
                log.warning("simulator: %s", exc)
            done += 1
            stop.wait(interval)

    def close(self) -> None:
        self.mqtt.loop_stop()
        self.mqtt.disconnect()
        self.http.close()
