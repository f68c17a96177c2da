"""A simulated city: fab labs that post their reports over HTTP and machines that publish
over MQTT, with realistic flows (filament from the recycling hub or from far away, plywood
from the region, offcuts composted or landfilled, parts made and repaired, some sold outside
the city).

Its pace is a real city's: the history has 12–22 machine jobs a day (about 100 things made),
and live ticks keep that rate, spread over the labs' opening hours in the city's time zone, so
an hour of watching adds about what an hour of a real day does. Every part is made from a
registered design that carries its mass, so "things made" have a known mass (modelled)."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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

# How a day's activity spreads over the local hours: the labs open at 9 and close at 21, with
# a late-morning and an early-evening peak. Relative weights; `share` makes them fractions.
HOUR_WEIGHTS = (
    (0,) * 8 + (0.2, 0.8, 1.2, 1.4, 1.2, 0.6, 0.9, 1.2, 1.4, 1.3, 1.0, 0.6, 0.2) + (0,) * 3
)
# A normal day in the history: 12–22 machine jobs (mean 17) and 1–4 job reports.
JOBS_PER_DAY = 17.0
JOB_REPORTS_PER_DAY = 2.5
SITE_REPORTS_PER_DAY = 1.0  # each site, once a day
# The urban factory's meter: standby at night, a few kW while the workshop is open.
STANDBY_KW, OPEN_KW = 0.4, 6.0

DESIGN_BASE = "https://designs.demo-city.example/okh"


@dataclass(frozen=True)
class SimDesign:
    slug: str
    name: str
    licence: str
    mass_g: float
    made_on: str  # the device kind that makes it


# Open designs, and one that is not (non-commercial is not an open licence): what the labs make.
DESIGNS = [
    SimDesign("cable-clip", "Cable clip", "CERN-OHL-S-2.0", 12.0, "printer"),
    SimDesign("phone-stand", "Phone stand", "CC-BY-SA-4.0", 45.0, "printer"),
    SimDesign("prosthetic-hand", "Prosthetic hand", "CC-BY-NC-4.0", 310.0, "printer"),
    SimDesign("stool-seat", "Stool seat", "CERN-OHL-P-2.0", 850.0, "laser"),
    SimDesign("planter-box", "Planter box", "CC-BY-4.0", 1_400.0, "laser"),
    SimDesign("bike-bracket", "Bike bracket", "CERN-OHL-W-2.0", 180.0, "cnc"),
    SimDesign("chair-repair-kit", "Chair repair kit", "CC-BY-SA-4.0", 650.0, "repair"),
]


def design_url(design: SimDesign) -> str:
    return f"{DESIGN_BASE}/{design.slug}/okh.toml"


def design_manifest(design: SimDesign) -> str:
    """An OKH-LOSH manifest for a simulated design; `mass` is in grams there."""
    return (
        'okhv = "OKH-LOSHv1.0"\n'
        f'name = "{design.name}"\n'
        'version = "1.0.0"\n'
        f'license = "{design.licence}"\n'
        'licensor = "Demo City makers"\n'
        f"mass = {design.mass_g}\n"
    )


def kw(hour: int) -> float:
    """What the urban factory's workshop draws in local `hour`."""
    return STANDBY_KW + OPEN_KW * HOUR_WEIGHTS[hour] / max(HOUR_WEIGHTS)


# The meter's counter: 10,000 kWh at the start of this date, then what the workshop draws.
METER_SINCE = date(2026, 1, 1)


def meter_total(day: date, hour: float) -> float:
    """The meter's counter at local `hour` (0–24, fractional) of `day`: the same for the
    same moment whichever day the simulator started, so readings never run backwards."""
    whole = int(hour)
    today = sum(kw(h) for h in range(whole)) + (kw(whole) * (hour - whole) if whole < 24 else 0)
    return 10_000 + (day - METER_SINCE).days * sum(kw(h) for h in range(24)) + today


def share(hour: int) -> float:
    """The fraction of a day's activity that falls in local `hour`."""
    return HOUR_WEIGHTS[hour] / sum(HOUR_WEIGHTS)


def happenings(rnd: random.Random, per_day: float, hour: int, seconds: float) -> int:
    """How many of something that happens `per_day` times happen in `seconds` of local `hour`:
    the expected number, with its fraction drawn (unbiased; a 2 s tick is mostly 0)."""
    expected = per_day * share(hour) * seconds / 3600
    whole = int(expected)
    return whole + (1 if rnd.random() < expected - whole else 0)


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


def made(kind: str, rnd: random.Random, kept_g: float, export_share: float = 0.0) -> dict[str, Any]:
    """Parts made from one of the designs a `kind` of machine makes, as many as the material
    kept in them (`kept_g`, what was consumed less the offcuts) weighs; some leave the city."""
    design = rnd.choice([d for d in DESIGNS if d.made_on == kind])
    count = max(1, round(kept_g / design.mass_g))
    ring = rnd.choice(["region", "beyond"]) if rnd.random() < export_share else "city"
    return flow("produce", "part", count, "count", ring, design=design_url(design))


def device_flows(device: SimDevice, rnd: random.Random) -> list[dict[str, Any]]:
    """What one finished job on a machine consumed, made and threw away: what was consumed is
    in the parts made or in the offcuts, nothing else."""
    job = uuid.UUID(int=rnd.getrandbits(128)).hex[:12]
    if device.kind == "printer":
        local = rnd.random() < 0.45
        grams, scrap = rnd.uniform(20, 400), rnd.uniform(0.03, 0.12)
        material = "rPETG" if local else "PLA"
        ring = "city" if local else "beyond"
        return [
            flow(
                "consume", "filament", grams, "g", ring, recycled=local, material=material, job=job
            ),
            {**made("printer", rnd, grams * (1 - scrap), export_share=0.05), "job": job},
            flow("discard", "filament", grams * scrap, "g", "city", fate="recycle", job=job),
        ]
    if device.kind == "laser":
        kg, scrap = rnd.uniform(0.5, 4), rnd.uniform(0.1, 0.3)
        fate = rnd.choice(["compost", "energy", "landfill"])
        return [
            flow("consume", "wood", kg, "kg", "region", material="birch plywood", job=job),
            {**made("laser", rnd, kg * 1000 * (1 - scrap), export_share=0.1), "job": job},
            flow("discard", "wood", kg * scrap, "kg", "city", fate=fate, job=job),
        ]
    kg, scrap = rnd.uniform(0.5, 3), rnd.uniform(0.1, 0.4)
    ring = rnd.choice(["region", "beyond"])
    return [
        flow("consume", "metal", kg, "kg", ring, material="aluminium", job=job),
        # The urban factory sells a third of its batches to the region and beyond.
        {**made("cnc", rnd, kg * 1000 * (1 - scrap), export_share=0.33), "job": job},
        flow("discard", "metal", kg * scrap, "kg", "city", fate="recycle", job=job),
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
    repair_kit = next(d for d in DESIGNS if d.made_on == "repair")
    return [
        flow(
            "modify", "furniture", rnd.randint(0, 3), "count", "city", design=design_url(repair_kit)
        ),
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
        "design": design_url(rnd.choice([d for d in DESIGNS if d.made_on == "printer"])),
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
        # Set from the clock at the first tick; the history's readings are those of their hour.
        self.meter_total = 0.0
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fabcity-sim-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if mqtt_protocol == "5" else mqtt.MQTTv311,
        )
        self.mqtt_host, self.mqtt_port = mqtt_host, mqtt_port
        self.tz = ZoneInfo(str(CITY["timezone"]))

    def setup(self) -> None:
        """Register the city, then connect to the broker."""
        self.register()
        self.mqtt.connect(self.mqtt_host, self.mqtt_port)
        self.mqtt.loop_start()

    def register(self) -> None:
        """Register the city, its sites, devices and designs (what exists already is left
        alone; a design's manifest is imported again, which changes nothing)."""
        self._create("/v1/cities", CITY)
        for site in SITES:
            self._create(f"/v1/cities/{self.city}/sites", site)
        for d in [*DEVICES, JOB_PRINTER, METER]:
            self._create(
                f"/v1/cities/{self.city}/sites/{d.site}/devices",
                {"slug": d.slug, "name": d.name, "kind": d.kind},
            )
        for design in DESIGNS:
            response = self.http.post(
                "/v1/designs",
                params={"url": design_url(design)},
                content=design_manifest(design),
                headers={"content-type": "application/toml"},
            )
            if response.status_code not in (200, 201):
                raise RuntimeError(f"POST /v1/designs: {response.status_code} {response.text}")

    def _create(self, path: str, body: dict[str, Any]) -> None:
        response = self.http.post(path, json=body)
        if response.status_code not in (201, 409):
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")

    def _local_hour(self, rnd: random.Random) -> int:
        """An opening hour, drawn as a day's activity spreads."""
        return rnd.choices(range(24), weights=HOUR_WEIGHTS)[0]

    def backfill(self, days: int) -> None:
        """Post `days` of history over HTTP, and today's hours so far. A day's events are drawn
        from its date alone and named by it, so a restart, on any day, posts the same events
        under the same ids: they are stored once."""
        now = datetime.now(UTC)
        today = now.astimezone(self.tz).date()
        for back in range(days, -1, -1):
            day = today - timedelta(days=back)
            batch = [e for e in self._day(day) if datetime.fromisoformat(e["time"]) <= now]
            if batch:
                self._post(batch)

    def _day(self, day: date) -> list[dict[str, Any]]:
        """One day of the city's events, the same every time for the same date."""
        rnd = random.Random(f"demo-city {day.isoformat()}")
        name = f"history-{day.isoformat()}"

        def at(hour: int, minute: int | None = None) -> datetime:
            # Local wall time, then its instant: the labs keep local hours across clock changes.
            minute = rnd.randint(0, 59) if minute is None else minute
            return datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.tz).astimezone(
                UTC
            )

        batch = []
        for n in range(rnd.randint(12, 22)):
            d = rnd.choice(DEVICES)
            when = at(self._local_hour(rnd))
            batch.append(envelope(self._source(d), f"{name}-{n}", when, device_flows(d, rnd)))
        for site in SITES:
            batch.append(
                envelope(
                    f"/{self.city}/{site['slug']}",
                    f"{name}-{site['slug']}",
                    at(20),  # the day's report, at closing
                    site_report(str(site["slug"]), rnd),
                )
            )
        for k in range(rnd.randint(1, 4)):
            ended = at(self._local_hour(rnd))
            batch.append(
                envelope(
                    self._source(JOB_PRINTER),
                    f"{name}-job-{k}",
                    ended,
                    job(rnd, ended),
                    "fabcity.machine.job",
                )
            )
        for hour in (6, 12, 18, 23):
            total = meter_total(day, hour)
            batch.append(self._reading(f"{name}-meter-{hour}", at(hour, 0), total))
        return batch

    def _source(self, device: SimDevice) -> str:
        return f"/{self.city}/{device.site}/{device.slug}"

    def _reading(self, event_id: str, when: datetime, total: float) -> dict[str, Any]:
        """The meter's cumulative counter, in kWh."""
        data = {"energy_kwh_total": round(total, 3)}
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

    def tick(self, seconds: float = 2.0, now: datetime | None = None) -> None:
        """What happens in the city in `seconds` up to `now`, at a real day's pace: machines
        finish jobs (MQTT) and sites post their day's report (HTTP) as often as they do over a
        day, more in the busy hours and none at night; the energy meter reports every tick."""
        now = now or datetime.now(UTC)
        hour = now.astimezone(self.tz).hour
        for _ in range(happenings(self.rnd, JOBS_PER_DAY, hour, seconds)):
            d = self.rnd.choice(DEVICES)
            event = envelope(self._source(d), uuid.uuid4().hex, now, device_flows(d, self.rnd))
            self._publish(d, event)
        local = now.astimezone(self.tz)
        self.meter_total = max(
            self.meter_total,
            meter_total(local.date(), local.hour + local.minute / 60 + local.second / 3600),
        )
        self._publish(METER, self._reading(uuid.uuid4().hex, now, self.meter_total))
        for _ in range(happenings(self.rnd, JOB_REPORTS_PER_DAY, hour, seconds)):
            data = job(self.rnd, now)
            self._publish(
                JOB_PRINTER,
                envelope(
                    self._source(JOB_PRINTER), uuid.uuid4().hex, now, data, "fabcity.machine.job"
                ),
            )
        for site in SITES:
            for _ in range(happenings(self.rnd, SITE_REPORTS_PER_DAY, hour, seconds)):
                source = f"/{self.city}/{site['slug']}"
                report = site_report(str(site["slug"]), self.rnd)
                self._post([envelope(source, uuid.uuid4().hex, now, report)])

    def _publish(self, device: SimDevice, event: dict[str, Any]) -> None:
        topic = f"{self.prefix}/{self.city}/{device.site}/{device.slug}/events"
        self.mqtt.publish(topic, orjson.dumps(event), qos=1)
        self.published += 1

    def run(self, interval: float, stop: threading.Event, ticks: int | None = None) -> None:
        done = 0
        while not stop.is_set() and (ticks is None or done < ticks):
            try:
                self.tick(interval)
            except Exception as exc:  # a hiccup of the API must not end the simulation
                log.warning("simulator: %s", exc)
            done += 1
            stop.wait(interval)

    def close(self) -> None:
        self.mqtt.loop_stop()
        self.mqtt.disconnect()
        self.http.close()
