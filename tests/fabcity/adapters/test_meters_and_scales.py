"""Tasmota, Shelly and ESPHome: energy counters that reset, scales, local time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fabcity.adapters.base import Refused
from schemas.events import EventType
from tests.fabcity.adapters.support import device, events, message, run
from tests.fixtures.devices import load


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


def test_a_shelly_counter_is_ordered_by_arrival_not_by_two_clocks() -> None:
    # `status/switch:0` carries no time (the receive time stands in) and `NotifyStatus` the
    # device's `ts`. Delivered late (a backlog at the broker), the notification's `ts` is
    # before the status message's receipt: it is still the next reading, not an old one.
    dev = device("shelly", topic_prefix="shellyplusplugs-e86beae12f10")
    p = "shellyplusplugs-e86beae12f10"
    notify = load("shelly/notify-status.json")  # ts 1767348960.12: 10:16:00 UTC
    notify["params"]["switch:0"]["aenergy"]["total"] = 26564.252
    received = datetime(2026, 1, 2, 10, 20, tzinfo=UTC)
    out = events(
        run(
            dev,
            [
                message(f"{p}/status/switch:0", switch(26064.252), received),
                message(f"{p}/events/rpc", notify, received.replace(second=1)),
                message(f"{p}/status/switch:0", switch(27264.252), received.replace(second=2)),
            ],
        )
    )
    # 26,064.252 Wh (baseline) → 26,564.252 → 27,264.252: 0.5 then 0.7 kWh, each when read.
    assert [e.data["energy_kwh"] for e in out] == pytest.approx([0.5, 0.7])
    assert out[0].time == datetime.fromtimestamp(1767348960.12, UTC)


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


SPOOL_CONFIG = "homeassistant/sensor/filament-scale/spool_weight/config"
SPOOL_STATE = "filament-scale/sensor/spool_weight/state"


def spool_scale(grams: list[str], **settings: Any) -> list[dict[str, object]]:
    """The data of the readings an ESPHome spool scale yields for these states, one a second."""
    dev = device("esphome", topic_prefix="filament-scale", material="PLA", **settings)
    config = message(SPOOL_CONFIG, load("esphome-spool-weight-config.json"))
    states = [message(SPOOL_STATE, g, at=i + 1) for i, g in enumerate(grams)]
    return [e.data for e in events(run(dev, [config, *states]))]


def test_a_spool_scale_counts_what_was_used_not_the_spool_again() -> None:
    # 812.4 g, then 790.0 g left on the spool: 22.4 g = 0.0224 kg used. Read as weighings,
    # each state was an amount: 0.8124 + 0.7900 = 1.6024 kg, 72 times what was used.
    assert spool_scale(["812.4", "790.0"], scale="remaining") == [
        {"net_kg": pytest.approx(0.0224), "direction": "in", "material": "PLA"}
    ]
    weighed = spool_scale(["812.4", "790.0"])  # the intake-scale default, unchanged
    assert sum(float(str(d["net_kg"])) for d in weighed) == pytest.approx(1.6024)


def test_a_refill_is_a_new_level_never_a_negative_use() -> None:
    # 812.4 → 790.0: 22.4 g used. 790.0 → 1250.0: a new spool, nothing. 1250.0 → 1200.0:
    # 50.0 g used. 1200.0 → 0.0 (spool lifted off) → 1200.0 (put back): nothing.
    out = spool_scale(["812.4", "790.0", "1250.0", "1200.0", "0.0", "1200.0"], scale="remaining")
    assert [d["net_kg"] for d in out] == [pytest.approx(0.0224), pytest.approx(0.05)]


def test_drift_is_not_use_but_slow_use_adds_up() -> None:
    # From 790.0: 789.0 and 788.5 are within 2 g of the level (drift), 791.0 too; 787.9 is
    # 2.1 g below it: 0.0021 kg, all of it, the small steps included.
    out = spool_scale(["790.0", "789.0", "788.5", "791.0", "787.9"], scale="remaining")
    assert [d["net_kg"] for d in out] == [pytest.approx(0.0021)]


def test_a_late_replayed_level_is_skipped() -> None:
    dev = device("esphome", topic_prefix="filament-scale", scale="remaining")
    config = message(SPOOL_CONFIG, load("esphome-spool-weight-config.json"))
    decoded = run(
        dev,
        [
            config,
            message(SPOOL_STATE, "812.4", at=10),
            message(SPOOL_STATE, "790.0", at=20),
            message(SPOOL_STATE, "850.0", at=5),  # a dead letter replayed: older than the level
            message(SPOOL_STATE, "780.0", at=30),
        ],
    )
    # 812.4 → 790.0: 22.4 g; the old 850.0 is not a refill; 790.0 → 780.0: 10.0 g.
    assert [e.data["net_kg"] for e in events(decoded)] == [
        pytest.approx(0.0224),
        pytest.approx(0.01),
    ]


def test_a_tasmota_hx711_under_a_bin_counts_its_decrease() -> None:
    dev = device("tasmota", topic="bin-pellets", material="PLA", scale="remaining")
    topic = "tele/bin-pellets/SENSOR"

    def weight(kg: float, minute: int) -> dict[str, object]:
        return {"Time": f"2026-01-02T09:{minute:02d}:11", "HX711": {"Weight": kg}}

    out = events(
        run(dev, [message(topic, weight(w, i)) for i, w in enumerate((12.5, 11.25, 20.0, 19.0))])
    )
    # 12.5 → 11.25: 1.25 kg; 11.25 → 20.0: refilled; 20.0 → 19.0: 1.0 kg.
    assert [e.data["net_kg"] for e in out] == [pytest.approx(1.25), pytest.approx(1.0)]
