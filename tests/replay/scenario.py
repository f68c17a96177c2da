"""A small city's morning, told in the messages its machines publish, and every figure the
platform must make of it, derived by hand.

The messages are the documented ones in `tests/fixtures/devices/` (their SOURCE notes say
where each comes from); where a document shows one message, the scenario sets the values that
change from one message to the next (a counter's total, a weight, a state) and says so.

Testville has two sites. `lab`, a fab lab: an OctoPrint Prusa MK3, a Klipper Voron (job
status from Moonraker's `print_stats`), a Klipper Trident (jobs from Moonraker's job
history), a Bambu X1C bridged into the city's broker, a PrusaLink MK4 (polled over HTTP), a
Shopbot CNC behind a Sparkplug B edge node, a Sonoff Pow R2 (Tasmota) on the panel saw, a
Shelly Plus Plug S on the laser cutter and an ESPHome scale under a filament spool. `hub`, a
recycling hub: a Tasmota HX711 intake scale, a Shelly Pro 3EM on the shredder line and a
Tasmota plug, `hub-meter`, whose readings fill the backlog (`filler`).

Figures are in the resource's canonical unit; each flow is stored in millionths, so a figure
is the sum of the flows each rounded to 6 decimals.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from fabcity.adapters import sparkplug_b as pb
from tests.fixtures.devices import load

# What the backlog holds: the scenario's MQTT messages and the filler readings.
BACKLOG = 10_000


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    retain: bool = False  # as the device publishes it (wills, births, ESPHome states)


@dataclass(frozen=True)
class DeviceSpec:
    site: str
    slug: str
    kind: str
    adapter: str
    settings: dict[str, Any]


def devices(prusalink_url: str) -> list[DeviceSpec]:
    return [
        DeviceSpec("lab", "mk3", "printer", "octoprint", {"material": "PLA"}),
        DeviceSpec(
            "lab", "voron", "printer", "moonraker", {"instance_name": "voron24", "material": "PETG"}
        ),
        DeviceSpec(
            "lab",
            "trident",
            "printer",
            "moonraker",
            {"instance_name": "trident", "jobs_from": "history"},
        ),
        DeviceSpec("lab", "x1c", "printer", "bambu", {"serial": X1C, "material": "PETG"}),
        DeviceSpec(
            "lab",
            "mk4",
            "printer",
            "prusalink",
            {"url": prusalink_url, "api_key": "k", "poll_interval_s": 1},
        ),
        DeviceSpec(
            "lab",
            "cnc",
            "cnc",
            "sparkplug",
            {
                "group_id": "fablab-a",
                "edge_node_id": "gw-cnc-01",
                "device_id": "shopbot-1",
                "energy_metric": "Energy",
                "energy_unit": "Wh",
                "job_active_metric": "Running",
            },
        ),
        DeviceSpec("lab", "saw-plug", "meter", "tasmota", {"topic": "pow1"}),
        DeviceSpec("lab", "laser-plug", "meter", "shelly", {"topic_prefix": SHELLY}),
        DeviceSpec(
            "lab",
            "spool-scale",
            "scale",
            "esphome",
            {"topic_prefix": "filament-scale", "scale": "remaining", "resource": "filament"},
        ),
        DeviceSpec(
            "hub",
            "intake-scale",
            "scale",
            "tasmota",
            {"topic": "scale-intake", "resource": "plastic"},
        ),
        DeviceSpec("hub", "shredder", "meter", "shelly", {"topic_prefix": PRO3EM, "meter": "em"}),
        DeviceSpec("hub", "hub-meter", "meter", "tasmota", {"topic": "hub-meter"}),
    ]


X1C = "01P00A381200123"
SHELLY = "shellyplusplugs-e86beae12f10"
PRO3EM = "shellypro3em-0cb815fc1234"


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _with(name: str, **changes: Any) -> dict[str, Any]:
    """A fixture message with some top-level values set."""
    body: dict[str, Any] = copy.deepcopy(load(name))
    body.update(changes)
    return body


def _tasmota_energy(total_kwh: float, time: str) -> bytes:
    # The Sonoff Pow R2 document's SENSOR message, its `Time` and `Total` set.
    body = _with("tasmota/sensor-energy.json", Time=time)
    body["ENERGY"]["Total"] = total_kwh
    return _json(body)


def _hx711(weight_kg: float, time: str) -> bytes:
    body = _with("tasmota/sensor-hx711.json", Time=time)
    body["HX711"]["Weight"] = weight_kg
    return _json(body)


def _switch(total_wh: float) -> bytes:
    body = _with("shelly/status-switch.json")
    body["aenergy"]["total"] = total_wh
    return _json(body)


def _emdata(total_wh: float) -> bytes:
    return _json(_with("shelly/status-emdata.json", total_act=total_wh))


def _sparkplug(name: str) -> bytes:
    """A payload described as the Sparkplug specification describes them, encoded."""
    types = {"Int64": pb.INT64, "Boolean": pb.BOOLEAN, "String": pb.STRING,
             "Double": pb.DOUBLE, "Float": pb.FLOAT}  # fmt: skip
    body = load(name)
    metrics = tuple(
        pb.Metric(m.get("name"), m.get("alias"), m["timestamp"], types[m["dataType"]], m["value"])
        for m in body["metrics"]
    )
    return pb.encode(pb.Payload(body["timestamp"], body["seq"], metrics))


def _bambu(name: str) -> bytes:
    return _json(load(name))


# Phase A: every job starts, every counter and scale sets its baseline (before the kill). ---


def phase_a() -> list[Publish]:
    octo = "octoPrint"
    return [
        # OctoPrint: the plugin's will topic, then the first job starts (bracket_v3.gcode).
        Publish(f"{octo}/mqtt", b"connected", retain=True),
        Publish(f"{octo}/event/PrintStarted", _json(load("octoprint/print-started.json"))),
        # Progress is retained; with `printerData` it carries the slicer's filament length.
        Publish(
            f"{octo}/progress/printing",
            _json(load("octoprint/progress-printing.json")),
            retain=True,
        ),
        # Moonraker: availability (retained), then a job in progress.
        Publish("voron24/moonraker/status", _json({"server": "online"}), retain=True),
        Publish("voron24/klipper/status", _json(load("moonraker-status-printing.json"))),
        # Bambu: idle, then running (P1/X1 deltas; numbers partly strings).
        Publish(f"device/{X1C}/report", _bambu("bambu/push-status-idle.json")),
        Publish(f"device/{X1C}/report", _bambu("bambu/push-status-running.json")),
        # Sparkplug: the node's birth, the device's birth (Energy 12,000 Wh: the baseline),
        # the spindle starts (Running true at 1767348960000 ms), a host's STATE (retained).
        Publish("spBv1.0/fablab-a/NBIRTH/gw-cnc-01", _sparkplug("sparkplug/nbirth.json")),
        Publish("spBv1.0/fablab-a/DBIRTH/gw-cnc-01/shopbot-1", _sparkplug("sparkplug/dbirth.json")),
        Publish(
            "spBv1.0/fablab-a/DDATA/gw-cnc-01/shopbot-1",
            _sparkplug("sparkplug/ddata-started.json"),
        ),
        Publish(
            "spBv1.0/STATE/scada-host",
            _json(load("sparkplug-state-birth.json")),
            retain=True,
        ),
        # Tasmota Pow R2 on the saw: will, then 6.294 kWh (the baseline) and 6.404 kWh on
        # `Status 8` (the document's STATUS8 answer, its Time set): +0.110 kWh.
        Publish("tele/pow1/LWT", b"Online", retain=True),
        Publish("tele/pow1/SENSOR", _tasmota_energy(6.294, "2026-01-02T09:00:00")),
        Publish(
            "stat/pow1/STATUS8",
            _json(
                {
                    "StatusSNS": {
                        **load("tasmota/status8.json")["StatusSNS"],
                        "Time": "2026-01-02T09:05:00",
                    }
                }
            ),
        ),
        # Shelly Plus Plug S on the laser: will, 26,064.252 Wh (baseline), then a
        # NotifyStatus at 26,564.252 Wh: +0.5 kWh.
        Publish(f"{SHELLY}/online", b"true", retain=True),
        Publish(f"{SHELLY}/status/switch:0", _switch(26064.252)),
        Publish(f"{SHELLY}/events/rpc", _notify(26564.252)),
        # ESPHome spool scale: birth, discovery config (both retained), and the spool's
        # weight in g (states retained, ESPHome's default): 812.4 sets the level, 790.0 is
        # 22.4 g used.
        Publish("filament-scale/status", b"online", retain=True),
        Publish(
            "homeassistant/sensor/filament-scale/spool_weight/config",
            _json(load("esphome-spool-weight-config.json")),
            retain=True,
        ),
        Publish("filament-scale/sensor/spool_weight/state", b"812.4", retain=True),
        Publish("filament-scale/sensor/spool_weight/state", b"790.0", retain=True),
        # The hub's intake scale (HX711 `Weight` in kg, WeightRes 3): 1.412 kg weighed
        # (the source's message), then the scale is emptied.
        Publish("tele/scale-intake/LWT", b"Online", retain=True),
        Publish("tele/scale-intake/SENSOR", _hx711(1.412, "2026-01-02T09:02:11")),
        Publish("tele/scale-intake/SENSOR", _hx711(0.0, "2026-01-02T09:03:11")),
        # The Pro 3EM on the shredder: will, then `emdata:0` total_act 1,000,000 Wh (baseline).
        Publish(f"{PRO3EM}/online", b"true", retain=True),
        Publish(f"{PRO3EM}/status/emdata:0", _emdata(1000000.0)),
    ]


def _notify(total_wh: float) -> bytes:
    body = load("shelly/notify-status.json")
    body["params"]["switch:0"]["aenergy"]["total"] = total_wh
    return _json(body)


# Phase B: every job ends, counters move on, scales weigh. -------------------------------


def phase_b() -> list[Publish]:
    octo = "octoPrint"
    second_start = _with("octoprint/print-started.json", _timestamp=1767357900)
    second_progress = _with("octoprint/progress-printing.json", progress=40, _timestamp=1767358500)
    return [
        Publish(f"{octo}/event/PrintDone", _json(load("octoprint/print-done.json"))),
        # A second job, cancelled at 40 %: OctoPrint sends PrintCancelled and PrintFailed
        # with reason `cancelled`; the job counts once.
        Publish(f"{octo}/event/PrintStarted", _json(second_start)),
        Publish(f"{octo}/progress/printing", _json(second_progress), retain=True),
        Publish(f"{octo}/event/PrintCancelled", _json(load("octoprint/print-cancelled.json"))),
        Publish(f"{octo}/event/PrintFailed", _json(load("octoprint/print-failed.json"))),
        Publish("voron24/klipper/status", _json(load("moonraker-status-complete.json"))),
        # The Trident's job history, answered to `server.history.list`.
        Publish("trident/moonraker/api/response", _json(load("moonraker-history-list.json"))),
        Publish(f"device/{X1C}/report", _bambu("bambu/push-status-finish.json")),
        Publish(
            "spBv1.0/fablab-a/DDATA/gw-cnc-01/shopbot-1",
            _sparkplug("sparkplug/ddata-energy.json"),
        ),
        Publish(
            "spBv1.0/fablab-a/DDATA/gw-cnc-01/shopbot-1",
            _sparkplug("sparkplug/ddata-stopped.json"),
        ),
        Publish("tele/pow1/SENSOR", _tasmota_energy(6.620, "2026-01-02T09:10:00")),
        # `EnergyReset`: the counter starts again.
        Publish("tele/pow1/SENSOR", _tasmota_energy(0.012, "2026-01-02T09:15:00")),
        Publish("tele/pow1/SENSOR", _tasmota_energy(0.150, "2026-01-02T09:20:00")),
        Publish(f"{SHELLY}/status/switch:0", _switch(27264.252)),
        # `Switch.ResetCounters`: from 0 again, now at 100 Wh.
        Publish(f"{SHELLY}/status/switch:0", _switch(100.0)),
        Publish("filament-scale/sensor/spool_weight/state", b"790.5", retain=True),
        Publish("filament-scale/sensor/spool_weight/state", b"1012.0", retain=True),
        Publish("filament-scale/sensor/spool_weight/state", b"1000.0", retain=True),
        Publish("tele/scale-intake/SENSOR", _hx711(2.250, "2026-01-02T09:10:00")),
        Publish("tele/scale-intake/SENSOR", _hx711(2.250, "2026-01-02T09:15:00")),
        Publish("tele/scale-intake/SENSOR", _hx711(0.003, "2026-01-02T09:16:00")),
        Publish("tele/scale-intake/SENSOR", _hx711(0.875, "2026-01-02T09:20:00")),
        Publish(f"{PRO3EM}/status/emdata:0", _emdata(1002500.0)),
        Publish(f"{PRO3EM}/status/emdata:0", _emdata(1003250.5)),
    ]


# How many filler readings make the backlog 10,000 messages.
FILLER = BACKLOG - len(phase_a()) - len(phase_b())
FILLER_START = datetime(2026, 1, 2, 0, 0, 0)


def filler() -> list[Publish]:
    """`hub-meter` readings, one a second, each 1 Wh (0.001 kWh) above the one before."""
    out = []
    for k in range(FILLER):
        time = (FILLER_START + timedelta(seconds=k)).isoformat()
        # Rounded to Tasmota's 3 decimals (EnergyRes 3): 100.000, 100.001, ...
        out.append(
            Publish("tele/hub-meter/SENSOR", _tasmota_energy(round(100 + k / 1000, 3), time))
        )
    return out


# The PrusaLink MK4's answers, in the order the test moves the printer through them. --------


def prusalink_printing() -> dict[str, Any]:
    return {
        "status": load("prusalink/status-printing.json"),
        "job": load("prusalink/job-printing.json"),
    }


def prusalink_finished() -> dict[str, Any]:
    """The same job, finished after 1,534 s of printing (filled in)."""
    status = load("prusalink/status-printing.json")
    status["printer"]["state"] = "FINISHED"
    status["job"].update(progress=100.0, time_remaining=0, time_printing=1534)
    job = load("prusalink/job-printing.json")
    job.update(state="FINISHED", progress=100.0, time_remaining=0, time_printing=1534)
    return {"status": status, "job": job}


# What the city must count. ----------------------------------------------------------------

# (device, action, resource, state): quantity.
Figure = tuple[str, str, str, str]

EXPECTED: dict[Figure, float] = {
    # mk3, job 1: PrintDone `time` 5,423.871 s = 1.506631 h, measured (the printer's clock).
    # Its filament, from the slicer's 5,120.4 mm of 1.75 mm PLA (1.24 g/cm³):
    # π × 0.875² mm² × 5,120.4 mm = 12,316.005 mm³ = 12.316005 cm³ × 1.24 = 15.2718 g
    # = 0.015272 kg, modelled (a length, and the slicer's).
    # Job 2, cancelled at 40 % after 812.52 s = 0.225700 h: 40 % of the length,
    # 0.4 × 15.2718 g = 6.1087 g = 0.006109 kg consumed and the same discarded, no part.
    ("mk3", "use", "machine_hours", "measured"): 1.506631 + 0.225700,
    ("mk3", "consume", "filament", "modelled"): 0.015272 + 0.006109,
    ("mk3", "discard", "filament", "modelled"): 0.006109,
    ("mk3", "produce", "part", "measured"): 1,
    # voron: `print_stats.total_duration` 7,581.66 s = 2.106017 h, measured; 9,874.02 mm of
    # PETG (1.27 g/cm³): 2.4052819 mm² × 9,874.02 mm = 23,749.801 mm³ × 1.27 g/cm³
    # = 30.1622 g = 0.030162 kg, modelled.
    ("voron", "use", "machine_hours", "measured"): 2.106017,
    ("voron", "consume", "filament", "modelled"): 0.030162,
    ("voron", "produce", "part", "measured"): 1,
    # trident: the history entry. Its start_time is after its end_time (so in Moonraker's
    # document): no machine hours rather than negative ones. `filament_weight_total` 25.3 g
    # is the slicer's: 0.0253 kg modelled. The power sensor's 4.119977 kWh is measured.
    ("trident", "consume", "filament", "modelled"): 0.0253,
    ("trident", "consume", "electricity", "measured"): 4.119977,
    ("trident", "produce", "part", "measured"): 1,
    # x1c: one part. Its hours come from receive times (the reports carry no time): modelled,
    # and not the same from one condition to the next (see MODELLED_BY_RECEIPT).
    ("x1c", "produce", "part", "measured"): 1,
    # mk4 (PrusaLink): `time_printing` 1,534 s = 0.426111 h, measured; `filament used [g]`
    # 15.42 g = 0.01542 kg, the slicer's: modelled.
    ("mk4", "use", "machine_hours", "measured"): 0.426111,
    ("mk4", "consume", "filament", "modelled"): 0.01542,
    ("mk4", "produce", "part", "measured"): 1,
    # cnc: Running true at 1767348960000 ms, false at 1767354660000 ms: 5,700 s = 1.583333 h.
    # Energy (Wh) 12,000 (baseline) → 12,850 → 13,125.5: 0.85 + 0.2755 kWh.
    ("cnc", "use", "machine_hours", "measured"): 1.583333,
    ("cnc", "consume", "electricity", "measured"): 0.85 + 0.2755,
    ("cnc", "produce", "part", "measured"): 1,
    # saw-plug: 6.294 (baseline) → 6.404 → 6.620 → reset → 0.012 → 0.150 kWh:
    # 0.110 + 0.216 + 0.012 + 0.138 = 0.476 kWh.
    ("saw-plug", "consume", "electricity", "measured"): 0.476,
    # laser-plug: 26,064.252 (baseline) → 26,564.252 → 27,264.252 → reset → 100 Wh:
    # 0.5 + 0.7 + 0.1 = 1.3 kWh.
    ("laser-plug", "consume", "electricity", "measured"): 1.3,
    # spool-scale (remaining): 812.4 → 790.0 g: 22.4 g used; 790.5 is drift (under 2 g);
    # 1,012.0 a new spool (nothing counted); 1,000.0: 12.0 g used. 0.0224 + 0.012 kg.
    ("spool-scale", "consume", "filament", "measured"): 0.0224 + 0.012,
    # intake-scale (weighing): 1.412, empty, 2.250, 2.250 again (the same item, a periodic
    # report), 0.003 (under the 5 g an empty scale shows), 0.875 kg: 1.412 + 2.25 + 0.875.
    ("intake-scale", "consume", "plastic", "measured"): 1.412 + 2.25 + 0.875,
    # shredder: total_act 1,000,000 (baseline) → 1,002,500 → 1,003,250.5 Wh: 2.5 + 0.7505.
    ("shredder", "consume", "electricity", "measured"): 2.5 + 0.7505,
    # hub-meter: FILLER readings 1 Wh apart; the first is the baseline.
    ("hub-meter", "consume", "electricity", "measured"): (FILLER - 1) * 0.001,
}

# Figures a receive time stands behind: stated `modelled`, and different from one delivery to
# the next (a backlog delivers the start and the end of a job at once).
MODELLED_BY_RECEIPT: set[Figure] = {("x1c", "use", "machine_hours", "modelled")}

# Events by type.
EXPECTED_EVENTS = {
    # mk3 2, voron 1, trident 1, x1c 1, mk4 1, cnc 1.
    "fabcity.machine.job": 7,
    # saw-plug 4, laser-plug 3, shredder 2, cnc 2, hub-meter FILLER - 1.
    "fabcity.meter.reading": 4 + 3 + 2 + 2 + FILLER - 1,
    # spool-scale 2, intake-scale 3.
    "fabcity.scale.reading": 5,
    # Online once each: mk3, voron, mk4 (its first answer), cnc (DBIRTH), saw-plug,
    # laser-plug, spool-scale, intake-scale, shredder. The Bambu session topic is not
    # published here (no printer link); the Sparkplug host's STATE is no device's.
    "fabcity.device.status": 9,
}
