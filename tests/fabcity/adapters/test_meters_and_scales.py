"""Tasmota, Shelly and ESPHome: energy counters that reset, scales, local time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fabcity.adapters.base import Refused
from schemas.events import EventType
from tests.fabcity.adapters.support import device, events, message, run


def sensor(total: float, time: str) -> dict[str, object]:
    return {"Time": time, "ENERGY": {"Total": total, "Period": 217, "Power": 2635}}


def test_a_tasmota_counter_reset_gives_the_new_total_never_negative_energy() -> None:
    dev = device("tasmota", topic="plug-lasercutter")
    topic = "tele/plug-lasercutter/SENSOR"
    out = events(
        run(
            dev,
            [
                message(topic, sensor(412.734, "2026-01-02T11:15:00")),  # baseline only
                message(topic, sensor(413.000, "2026-01-02T11:20:00")),
                message(topic, sensor(0.050, "2026-01-02T11:25:00")),  # EnergyReset
                message(topic, sensor(0.300, "2026-01-02T11:30:00")),
            ],
        )
    )
    assert [e.type for e in out] == [EventType.meter_reading] * 3
    assert [e.data["energy_kwh"] for e in out] == pytest.approx([0.266, 0.05, 0.25])


def test_tasmota_time_is_read_in_the_city_time_zone() -> None:
    dev = device("tasmota", timezone="Europe/Madrid", topic="plug")
    out = events(
        run(
            dev,
            [
                message("tele/plug/SENSOR", sensor(1.0, "2026-07-02T11:15:00")),
                message("tele/plug/SENSOR", sensor(2.0, "2026-07-02T11:20:00")),
            ],
        )
    )
    assert out[0].time == datetime(2026, 7, 2, 9, 20, tzinfo=UTC)  # CEST is UTC+2


def test_an_older_reading_replayed_late_is_not_taken_for_a_reset() -> None:
    dev = device("tasmota", topic="plug")
    out = events(
        run(
            dev,
            [
                message("tele/plug/SENSOR", sensor(10.0, "2026-01-02T11:00:00")),
                message("tele/plug/SENSOR", sensor(11.0, "2026-01-02T12:00:00")),
                message("tele/plug/SENSOR", sensor(10.5, "2026-01-02T11:30:00")),
                message("tele/plug/SENSOR", sensor(11.2, "2026-01-02T12:30:00")),
            ],
        )
    )
    assert [e.data["energy_kwh"] for e in out] == pytest.approx([1.0, 0.2])


def test_a_custom_full_topic_and_status8_and_the_lwt() -> None:
    dev = device("tasmota", topic="laser", full_topic="tasmota/%topic%/%prefix%/")
    status8 = {"StatusSNS": sensor(5.0, "2026-01-02T11:00:00")}
    decoded = run(
        dev,
        [
            message("tasmota/laser/tele/LWT", "Online"),
            message("tasmota/laser/stat/STATUS8", status8),
            message("tasmota/laser/tele/SENSOR", sensor(5.5, "2026-01-02T11:05:00")),
            message("tasmota/laser/tele/LWT", "Offline"),
        ],
    )
    assert [d.online for d in decoded] == [True, None, None, False]
    meters = [e for e in events(decoded) if e.type is EventType.meter_reading]
    assert [e.data["energy_kwh"] for e in meters] == pytest.approx([0.5])


def test_a_tasmota_hx711_scale_reads_each_settled_weight_once() -> None:
    dev = device("tasmota", topic="scale-intake", material="PLA", direction="in")
    topic = "tele/scale-intake/SENSOR"

    def weight(kg: float) -> dict[str, object]:
        return {"Time": "2026-01-02T09:02:11", "HX711": {"Weight": kg, "WeightRaw": 1624}}

    out = events(run(dev, [message(topic, weight(w)) for w in (1.412, 1.412, 0.0, 1.412, 0.8)]))
    assert [e.data for e in out] == [
        {"net_kg": 1.412, "direction": "in", "material": "PLA"},
        {"net_kg": 1.412, "direction": "in", "material": "PLA"},
        {"net_kg": 0.8, "direction": "in", "material": "PLA"},
    ]
    assert len({e.key for e in out}) == 3


def switch(total_wh: float) -> dict[str, object]:
    return {
        "id": 0,
        "output": True,
        "apower": 3.8,
        "aenergy": {"total": total_wh, "by_minute": [198.422, 0.0, 0.0], "minute_ts": 1698999933},
    }


def test_shelly_switch_energy_in_wh_and_notify_status_with_its_timestamp() -> None:
    dev = device("shelly", topic_prefix="shellyplusplugs-e86beae12f10")
    p = "shellyplusplugs-e86beae12f10"
    notify = {
        "src": p,
        "method": "NotifyStatus",
        "params": {"ts": 1767348960.12, "switch:0": {"id": 0, "aenergy": {"total": 26564.252}}},
    }
    partial = {"method": "NotifyStatus", "params": {"ts": 1767348970, "switch:0": {"apower": 1}}}
    decoded = run(
        dev,
        [
            message(f"{p}/online", "true"),
            message(f"{p}/status/switch:0", switch(26064.252)),
            message(f"{p}/events/rpc", notify),
            message(f"{p}/events/rpc", partial),  # power only: nothing to count
            message(f"{p}/status/switch:1", switch(99999.0)),  # another channel
        ],
    )
    (reading,) = events(decoded)[1:]
    assert reading.data["energy_kwh"] == pytest.approx(0.5)
    assert reading.time == datetime.fromtimestamp(1767348960.12, UTC)


def test_shelly_pro_3em_counts_emdata_total_act() -> None:
    dev = device("shelly", topic_prefix="shellypro3em-1", meter="em")
    p = "shellypro3em-1"
    out = events(
        run(
            dev,
            [
                message(f"{p}/status/em:0", {"id": 0, "total_act_power": 2500.0}),
                message(f"{p}/status/emdata:0", {"id": 0, "total_act": 100000.0}),
                message(f"{p}/status/emdata:0", {"id": 0, "total_act": 101500.0}),
            ],
        )
    )
    assert [e.data["energy_kwh"] for e in out] == pytest.approx([1.5])


def test_esphome_states_need_their_unit_from_discovery() -> None:
    dev = device("esphome", topic_prefix="filament-scale", material="PLA")
    state = "filament-scale/sensor/spool_weight/state"
    with pytest.raises(Refused, match="no unit known"):
        run(dev, [message(state, "812.4")])
    config = {
        "~": "filament-scale/sensor/spool_weight",
        "name": "Spool weight",
        "stat_t": "~/state",
        "unit_of_meas": "g",
        "dev_cla": "weight",
        "avty_t": "filament-scale/status",
    }
    decoded = run(
        dev,
        [
            message("filament-scale/status", "online"),
            message("homeassistant/sensor/filament-scale/spool_weight/config", config),
            message(state, "812.4"),
            message(state, "812.4"),
        ],
    )
    assert decoded[0].online is True
    (reading,) = [e for e in events(decoded) if e.type is EventType.scale_reading]
    assert reading.data["net_kg"] == pytest.approx(0.8124)


def test_esphome_energy_in_wh_is_a_meter() -> None:
    dev = device("esphome", topic_prefix="lab-meter")
    state = "lab-meter/sensor/energy/state"
    config = {"state_topic": state, "unit_of_measurement": "Wh", "device_class": "energy"}
    out = events(
        run(
            dev,
            [
                message("homeassistant/sensor/lab-meter/energy/config", config),
                message(state, "1000", at=0),
                message(state, "2500", at=60),
            ],
        )
    )
    assert [e.data["energy_kwh"] for e in out] == pytest.approx([1.5])
