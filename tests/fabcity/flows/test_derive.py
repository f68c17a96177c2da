"""Deriving flows from events: pure functions, worked out by hand.

Amounts are integers in millionths of the resource's canonical unit (kg, kWh, count, h).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabcity.core.errors import Invalid
from fabcity.flows.derive import (
    DerivedFlow,
    DeviceInfo,
    ResourceInfo,
    counter_delta,
    derive,
    filament_mass_kg,
)
from fabcity.registry.entries import DEFAULT_RESOURCES
from schemas.events import CloudEvent
from tests.fabcity.adapters.support import device as adapter_device
from tests.fabcity.adapters.support import events as adapter_events
from tests.fabcity.adapters.support import message as adapter_message
from tests.fabcity.adapters.support import run
from tests.fixtures.devices import load, raw
from tests.support.city import flow as flow_data

RESOURCES: dict[str, ResourceInfo] = {r.name: r for r in DEFAULT_RESOURCES}
JOB_ID = "job-1"
DESIGN = "https://example.org/okh/stool.yml"


def event(type_: str, data: Any, id: str = JOB_ID) -> CloudEvent:
    return CloudEvent.model_validate(
        {
            "specversion": "1.0",
            "id": id,
            "source": "/testville/lab/printer",
            "type": type_,
            "time": "2026-03-10T10:00:00+01:00",
            "data": data,
        }
    )


def job(
    status: str = "completed",
    started: str = "2026-03-10T08:00:00+01:00",
    ended: str = "2026-03-10T09:30:00+01:00",
    **data: Any,
) -> CloudEvent:
    return event(
        "fabcity.machine.job", {"status": status, "started": started, "ended": ended, **data}
    )


def device(kind: str = "printer", **settings: Any) -> DeviceInfo:
    return DeviceInfo(id=7, kind=kind, settings=settings)


def flow(
    action: str,
    resource: str,
    amount: int,
    ring: str,
    *,
    fate: str = "",
    recycled: bool = False,
    material: str | None = None,
    design_url: str | None = None,
    job: str | None = None,
    state: str = "measured",
) -> DerivedFlow:
    return DerivedFlow(
        action, resource, amount, ring, fate, recycled, material, design_url, job, state
    )


def by_action(flows: list[DerivedFlow]) -> dict[str, list[DerivedFlow]]:
    found: dict[str, list[DerivedFlow]] = {}
    for f in flows:
        found.setdefault(f.action, []).append(f)
    return found


# Machine jobs ----------------------------------------------------------------------------------


def test_a_completed_job_with_a_mass() -> None:
    flows = derive(
        job(mass_kg=0.25, energy_kwh=0.4, material="PLA", design={"url": DESIGN}),
        RESOURCES,
        device(),
    )
    assert flows == [
        # The printer's material, from beyond the region unless its settings say otherwise.
        flow("consume", "filament", 250_000, "beyond", material="PLA", job=JOB_ID),
        # One part made in the city, of the design the job printed.
        flow("produce", "part", 1_000_000, "city", material="PLA", design_url=DESIGN, job=JOB_ID),
        # 08:00 to 09:30: 1.5 machine hours at the site.
        flow("use", "machine_hours", 1_500_000, "site", material="PLA", job=JOB_ID),
        # The energy the job drew, from the regional grid by default.
        flow("consume", "electricity", 400_000, "region", job=JOB_ID),
    ]


def test_a_job_takes_its_rings_from_the_device_settings() -> None:
    flows = derive(
        job(mass_kg=0.1, energy_kwh=0.2),
        RESOURCES,
        device(input_ring="city", energy_ring="site", recycled=True),
    )
    found = by_action(flows)
    assert [(f.resource, f.ring, f.recycled) for f in found["consume"]] == [
        ("filament", "city", True),
        ("electricity", "site", False),
    ]
    assert [(f.ring, f.recycled) for f in found["produce"]] == [("city", False)]
    assert [f.ring for f in found["use"]] == ["site"]


def test_a_job_of_a_secondary_resource_is_recycled_input() -> None:
    flows = derive(job(mass_kg=0.5), RESOURCES, device(resource="recycled_plastic"))
    assert flows[0] == flow(
        "consume", "recycled_plastic", 500_000, "beyond", recycled=True, job=JOB_ID
    )


def test_filament_mass_by_hand() -> None:
    # π (1.75 mm / 2)² = 2.40528 mm²; × 1000 mm = 2405.28 mm³ = 2.40528 cm³;
    # × 1.24 g/cm³ (PLA) = 2.98255 g.
    assert filament_mass_kg(1000, 1.75, 1.24) == pytest.approx(0.00298255, rel=1e-5)
    # π (2.85 mm / 2)² × 1000 mm = 6379.40 mm³ = 6.37940 cm³; × 1 g/cm³ = 6.37940 g.
    assert filament_mass_kg(1000, 2.85, 1.0) == pytest.approx(0.00637940, rel=1e-5)
    assert filament_mass_kg(0, 1.75, 1.24) == 0


def test_a_job_with_only_a_length_models_the_filament_mass() -> None:
    flows = derive(job(length_mm=1000, material="PLA"), RESOURCES, device())
    consumed = by_action(flows)["consume"]
    # 2.98255 g of PLA (see above) = 2983 millionths of a kg.
    assert consumed == [
        flow("consume", "filament", 2983, "beyond", material="PLA", job=JOB_ID, state="modelled")
    ]
    # Only the mass is modelled: the part and the machine hours are still measured.
    assert [f.state for f in flows if f.action != "consume"] == ["measured", "measured"]


def test_a_length_without_a_material_uses_pla_density_and_1_75_mm() -> None:
    flows = derive(job(length_mm=1000), RESOURCES, device())
    assert by_action(flows)["consume"][0].amount == 2983


def test_the_density_follows_the_material() -> None:
    # PETG, 1.27 g/cm³: 2.40528 cm³ × 1.27 = 3.05471 g.
    flows = derive(job(length_mm=1000, material="PETG"), RESOURCES, device())
    assert by_action(flows)["consume"][0].amount == 3055


def test_density_and_diameter_come_from_the_device_settings() -> None:
    # 2.85 mm filament of 1.0 g/cm³: 6.37940 g (see above), even though the job says PLA.
    printer = device(filament_diameter_mm=2.85, density_g_cm3=1.0)
    flows = derive(job(length_mm=1000, material="PLA"), RESOURCES, printer)
    consumed = by_action(flows)["consume"][0]
    assert (consumed.amount, consumed.state) == (6379, "modelled")


def test_a_reported_mass_wins_over_the_length() -> None:
    flows = derive(job(mass_kg=0.004, length_mm=1000), RESOURCES, device())
    consumed = by_action(flows)["consume"][0]
    assert (consumed.amount, consumed.state) == (4000, "measured")


def test_a_length_on_a_machine_that_does_not_use_filament_is_not_a_mass() -> None:
    flows = derive(job(length_mm=1000), RESOURCES, device("laser"))
    assert "consume" not in by_action(flows)


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_a_failed_job_wastes_its_material_and_makes_nothing(status: str) -> None:
    flows = derive(
        job(status, mass_kg=0.1, material="PETG", design={"url": DESIGN}), RESOURCES, device()
    )
    assert flows == [
        flow("consume", "filament", 100_000, "beyond", material="PETG", job=JOB_ID),
        flow("discard", "filament", 100_000, "city", material="PETG", job=JOB_ID),
        flow("use", "machine_hours", 1_500_000, "site", material="PETG", job=JOB_ID),
    ]


def test_a_failed_job_with_a_modelled_mass_wastes_the_same_modelled_mass() -> None:
    flows = derive(job("failed", length_mm=1000), RESOURCES, device())
    found = by_action(flows)
    assert [(f.amount, f.state) for f in found["consume"] + found["discard"]] == [
        (2983, "modelled"),
        (2983, "modelled"),
    ]
    assert "produce" not in found


def test_a_job_without_duration_uses_no_machine_hours() -> None:
    t = "2026-03-10T08:00:00+01:00"
    flows = derive(job(started=t, ended=t, mass_kg=0.01), RESOURCES, device())
    assert [f.action for f in flows] == ["consume", "produce"]


def test_a_job_across_offsets_counts_real_hours() -> None:
    # 08:00 at +01:00 is 07:00 UTC; 09:00 UTC is two hours later.
    flows = derive(
        job(started="2026-03-10T08:00:00+01:00", ended="2026-03-10T09:00:00Z"), RESOURCES, device()
    )
    assert by_action(flows)["use"][0].amount == 2_000_000


# Meters and counters -------------------------------------------------------------------------


def test_a_meter_delta_is_electricity_from_the_region_by_default() -> None:
    flows = derive(event("fabcity.meter.reading", {"energy_kwh": 1.25}), RESOURCES, device("meter"))
    assert flows == [flow("consume", "electricity", 1_250_000, "region")]


def test_a_meter_delta_takes_its_ring_from_the_settings() -> None:
    flows = derive(
        event("fabcity.meter.reading", {"energy_kwh": 0.5}),
        RESOURCES,
        device("meter", energy_ring="site"),
    )
    assert flows == [flow("consume", "electricity", 500_000, "site")]


def test_a_meter_total_derives_nothing_here() -> None:
    # A cumulative counter needs the previous reading: `meters` handles it.
    reading = event("fabcity.meter.reading", {"energy_kwh_total": 1234.5})
    assert derive(reading, RESOURCES, device("meter")) == []


def test_counter_delta() -> None:
    assert counter_delta(None, 100.0) is None  # first reading: no baseline
    assert counter_delta(100.0, 102.5) == 2.5
    assert counter_delta(102.5, 102.5) == 0
    assert counter_delta(102.5, 3.0) == 3.0  # reset: what it shows was used since
    assert counter_delta(102.5, 0.0) == 0.0


@given(
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
)
def test_counter_delta_is_never_negative(previous: float, total: float) -> None:
    delta = counter_delta(previous, total)
    assert delta is not None
    assert delta >= 0
    assert delta == (total - previous if total >= previous else total)


# Scales ------------------------------------------------------------------------------------


def test_scale_in_is_consumed() -> None:
    reading = event("fabcity.scale.reading", {"net_kg": 2.5, "material": "wood", "direction": "in"})
    flows = derive(reading, RESOURCES, device("scale", input_ring="region"))
    assert flows == [flow("consume", "wood", 2_500_000, "region", material="wood")]


def test_scale_out_is_discarded_with_the_fate_of_the_settings() -> None:
    reading = event(
        "fabcity.scale.reading", {"net_kg": 0.75, "material": "food", "direction": "out"}
    )
    flows = derive(reading, RESOURCES, device("scale", fate="compost"))
    assert flows == [flow("discard", "food", 750_000, "city", fate="compost", material="food")]


def test_scale_of_a_secondary_resource_is_recycled() -> None:
    reading = event("fabcity.scale.reading", {"net_kg": 1.0, "direction": "in"})
    flows = derive(reading, RESOURCES, device("scale", resource="scrap_metal", input_ring="city"))
    assert flows == [flow("consume", "scrap_metal", 1_000_000, "city", recycled=True)]


def test_scale_of_an_unknown_material_weighs_plastic() -> None:
    reading = event("fabcity.scale.reading", {"net_kg": 1.0, "material": "x", "direction": "out"})
    flows = derive(reading, RESOURCES, device("scale", fate="recycle"))
    assert [(f.resource, f.fate) for f in flows] == [("plastic", "recycle")]


@pytest.mark.parametrize("net_kg", [0.0, -1.5])
def test_scale_without_a_positive_net_mass_derives_nothing(net_kg: float) -> None:
    reading = event("fabcity.scale.reading", {"net_kg": net_kg, "direction": "in"})
    assert derive(reading, RESOURCES, device("scale")) == []


# Flow events -----------------------------------------------------------------------------------


def test_site_reported_flows_are_reported_in_millionths_of_the_canonical_unit() -> None:
    posted = event(
        "fabcity.flow",
        [
            flow_data(quantity=500, unit="g"),
            flow_data("consume", "electricity", 250, "Wh", "site"),
            flow_data("produce", "part", 3, "pcs", "cell", design=DESIGN, job="batch-9"),
            flow_data("discard", "plastic", 1.5, "kg", fate="recycle", material="PLA"),
            flow_data("consume", "recycled_plastic", 2, "kg"),  # a secondary resource
            flow_data("use", "machine_hours", 90, "min", "site"),
        ],
    )
    assert derive(posted, RESOURCES, None) == [
        flow("consume", "filament", 500_000, "city", state="reported"),
        flow("consume", "electricity", 250_000, "site", state="reported"),
        flow(
            "produce", "part", 3_000_000, "site", design_url=DESIGN, job="batch-9", state="reported"
        ),
        flow(
            "discard",
            "plastic",
            1_500_000,
            "city",
            fate="recycle",
            material="PLA",
            state="reported",
        ),
        flow("consume", "recycled_plastic", 2_000_000, "city", recycled=True, state="reported"),
        flow("use", "machine_hours", 1_500_000, "site", state="reported"),
    ]


def test_flows_a_device_posts_are_measured() -> None:
    posted = event("fabcity.flow", flow_data(quantity=2, unit="kg", recycled=True))
    assert derive(posted, RESOURCES, device()) == [
        flow("consume", "filament", 2_000_000, "city", recycled=True)
    ]


def test_amounts_are_integers() -> None:
    posted = event("fabcity.flow", flow_data(quantity=1, unit="mg"))
    [derived] = derive(posted, RESOURCES, None)
    assert derived.amount == 1
    assert isinstance(derived.amount, int)


def test_an_unknown_resource_names_the_flow_of_a_list() -> None:
    posted = event("fabcity.flow", [flow_data(), flow_data(resource="unobtainium")])
    with pytest.raises(Invalid, match=r"^data\[1\]: unknown resource 'unobtainium'"):
        derive(posted, RESOURCES, None)


def test_a_unit_that_cannot_be_converted_names_the_flow_of_a_list() -> None:
    posted = event("fabcity.flow", [flow_data(), flow_data("produce", "part", 1, "kg")])
    with pytest.raises(Invalid, match=r"^data\[1\]: 'part' is measured in 'count'"):
        derive(posted, RESOURCES, None)


def test_errors_of_a_single_flow_name_data() -> None:
    with pytest.raises(Invalid, match=r"^data: unknown resource 'unobtainium'"):
        derive(event("fabcity.flow", flow_data(resource="unobtainium")), RESOURCES, None)
    with pytest.raises(Invalid, match=r"^data: unknown unit 'furlong'"):
        derive(event("fabcity.flow", flow_data(unit="furlong")), RESOURCES, None)


def test_device_events_without_a_device_derive_nothing() -> None:
    assert derive(job(mass_kg=1.0), RESOURCES, None) == []
    assert derive(event("fabcity.meter.reading", {"energy_kwh": 1.0}), RESOURCES, None) == []
    assert derive(event("fabcity.device.status", {"online": True}), RESOURCES, device()) == []


# Measured or modelled: what the machine counted, or an estimate --------------------------------


def from_adapter(adapter: str, messages: list[tuple[str, Any, float]], **settings: Any) -> Any:
    """The one event an adapter yields for these messages, as the CloudEvent ingest stores."""
    dev = adapter_device(adapter, **settings)
    decoded = run(dev, [adapter_message(t, p, at=a) for t, p, a in messages])
    # Availability aside (PrusaLink's first answer says the printer is online).
    (emitted,) = [e for e in adapter_events(decoded) if e.type.value != "fabcity.device.status"]
    return event(emitted.type.value, emitted.data)


def test_a_slicers_filament_weight_is_modelled_and_the_job_hours_measured() -> None:
    # Moonraker's history: filament_weight_total 25.3 g, from `; total filament used [g] =
    # 25.3` in the G-code: 0.0253 kg = 25,300 millionths, an estimate.
    answer = load("moonraker-history-list.json")
    answer["result"]["jobs"][0]["start_time"] = 1615764265.6493807 - 1800  # docs' start is late
    history = from_adapter(
        "moonraker",
        [("voron24/moonraker/api/response", answer, 0)],
        instance_name="voron24",
        jobs_from="history",
    )
    found = by_action(derive(history, RESOURCES, device()))
    assert [(f.amount, f.state) for f in found["consume"] if f.resource == "filament"] == [
        (25_300, "modelled")
    ]
    # start_time and end_time are the printer's: 1,800 s = 0.5 h, measured.
    assert [(f.amount, f.state) for f in found["use"]] == [(500_000, "measured")]
    # The kWh of Moonraker's power sensor is a meter's reading.
    assert [f.state for f in found["consume"] if f.resource == "electricity"] == ["measured"]


def test_prusalink_slicer_grams_are_modelled() -> None:
    # `filament used [g]` of the file's metadata, as in the G-code footer fixture: 25.3 g.
    footer = raw("prusaslicer-footer.gcode").decode()
    meta = {
        key.strip("; ").strip(): float(value)
        if key.strip().startswith("; filament used")
        else value
        for key, value in (line.split(" = ", 1) for line in footer.splitlines())
    }
    running = {
        "id": 7,
        "state": "PRINTING",
        "progress": 50.0,
        "time_printing": 3000,
        "file": {"path": "/usb/bracket.gcode", "m_timestamp": 1767340000, "meta": meta},
    }
    done = {**running, "state": "FINISHED", "progress": 100.0, "time_printing": 6000}
    url = "http://192.168.1.40"
    ended = from_adapter(
        "prusalink",
        [
            (f"prusalink:{url}", {"status": {}, "job": running}, 0),
            (f"prusalink:{url}", {"status": {}, "job": done}, 3000),
        ],
        url=url,
    )
    found = by_action(derive(ended, RESOURCES, device()))
    assert [(f.amount, f.state) for f in found["consume"]] == [(25_300, "modelled")]
    # time_printing 6,000 s = 1.666667 h, the printer's own count: measured.
    assert [(f.amount, f.state) for f in found["use"]] == [(1_666_667, "measured")]


def test_moonraker_status_hours_come_from_total_duration_even_in_a_backlog() -> None:
    # Both messages arrive 0.2 s apart; total_duration 7,581.66 s = 2.1060167 h.
    ended = from_adapter(
        "moonraker",
        [
            ("voron24/klipper/status", load("moonraker-status-printing.json"), 0.0),
            ("voron24/klipper/status", load("moonraker-status-complete.json"), 0.2),
        ],
        instance_name="voron24",
    )
    found = by_action(derive(ended, RESOURCES, device()))
    assert [(f.amount, f.state) for f in found["use"]] == [(2_106_017, "measured")]
    # The extruder's 9,874.02 mm of 1.75 mm PLA made into a mass is modelled, as before:
    # π × 0.0875² cm² = 0.0240528 cm²; × 987.402 cm = 23.7498 cm³; × 1.24 g/cm³ = 29.450 g.
    (filament,) = found["consume"]
    assert (filament.amount, filament.state) == (29_450, "modelled")


def test_hours_from_receive_times_are_modelled() -> None:
    base = "voron24/klipper/state/print_stats"
    ended = from_adapter(
        "moonraker",
        [
            (f"{base}/state", {"eventtime": 1.0, "value": "printing"}, 0),
            (f"{base}/state", {"eventtime": 901.0, "value": "complete"}, 900),
        ],
        instance_name="voron24",
    )
    # 900 s between the two receive times = 0.25 h, an estimate.
    assert [(f.amount, f.state) for f in by_action(derive(ended, RESOURCES, device()))["use"]] == [
        (250_000, "modelled")
    ]


def test_a_spool_scales_use_is_measured() -> None:
    config = load("esphome-spool-weight-config.json")
    used = from_adapter(
        "esphome",
        [
            ("homeassistant/sensor/filament-scale/spool_weight/config", config, 0),
            ("filament-scale/sensor/spool_weight/state", "812.4", 1),
            ("filament-scale/sensor/spool_weight/state", "790.0", 2),
        ],
        topic_prefix="filament-scale",
        material="PLA",
        resource="filament",
        scale="remaining",
    )
    # 812.4 g − 790.0 g = 22.4 g = 0.0224 kg = 22,400 millionths, weighed: measured.
    assert derive(used, RESOURCES, DeviceInfo(8, "scale", {"resource": "filament"})) == [
        flow("consume", "filament", 22_400, "city", material="PLA")
    ]


def test_a_native_job_that_names_its_estimates() -> None:
    flows = by_action(
        derive(
            job(mass_kg=0.05, energy_kwh=0.3, modelled=["mass_kg", "energy_kwh"]),
            RESOURCES,
            device(),
        )
    )
    assert [f.state for f in flows["consume"]] == ["modelled", "modelled"]
    assert [f.state for f in flows["use"]] == ["measured"]
