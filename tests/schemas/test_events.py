"""The CloudEvent contract: what a sender may send, and what is refused before any storage."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.events import (
    MAX_FLOWS_PER_EVENT,
    Action,
    CloudEvent,
    DesignRef,
    EventType,
    Fate,
    FlowData,
    MachineJobData,
    MeterReadingData,
    Ring,
    event_time,
)
from tests.support.city import event, flow


def validate(body: dict[str, Any]) -> CloudEvent:
    return CloudEvent.model_validate(body)


def refused(body: dict[str, Any]) -> str:
    """The validation message of a refused event (the test fails if it is accepted)."""
    with pytest.raises(ValidationError) as info:
        validate(body)
    return str(info.value)


# A valid flow event ---------------------------------------------------------------------------


def test_a_valid_flow_event_is_parsed_into_typed_fields() -> None:
    body = event(
        flow("consume", "filament", 2.5, "kg", "city", material="PLA", recycled=True, job="j1"),
        id="e-1",
        source="/testville/lab",
        time="2026-03-10T10:00:00+01:00",
    )

    parsed = validate(body)

    assert parsed.id == "e-1"
    assert parsed.source == "/testville/lab"
    assert parsed.type is EventType.flow
    # The offset is kept: 10:00 at +01:00 is 09:00 UTC.
    assert parsed.time == datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    assert parsed.time is not None and parsed.time.utcoffset() == timedelta(hours=1)
    [only] = parsed.flows()
    assert only == FlowData(
        action=Action.consume,
        resource="filament",
        quantity=2.5,
        unit="kg",
        ring=Ring.city,
        material="PLA",
        recycled=True,
        job="j1",
    )


def test_specversion_other_than_1_0_is_refused() -> None:
    body = event(flow())
    body["specversion"] = "0.3"
    assert "specversion" in refused(body)


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type"])
def test_required_envelope_attributes_are_required(missing: str) -> None:
    body = event(flow())
    del body[missing]
    assert missing in refused(body)


def test_extension_attributes_are_accepted_and_kept() -> None:
    # CloudEvents lets producers add extension attributes (tracing, partitioning); refusing
    # them would break standard SDKs, and dropping them would lose them from the stored JSON.
    body = event(flow())
    body["traceparent"] = "x"
    body["partitionkey"] = "lab-1"

    parsed = validate(body)

    assert parsed.model_extra == {"traceparent": "x", "partitionkey": "lab-1"}
    assert parsed.model_dump()["traceparent"] == "x"


# Normalisation of the flow ---------------------------------------------------------------------


def test_cell_ring_is_an_alias_of_site() -> None:
    parsed = validate(event(flow(ring="cell")))
    assert parsed.flows()[0].ring is Ring.site


def test_other_unknown_rings_are_refused() -> None:
    # Only `cell` is an alias; a typo must not silently become some ring.
    assert "ring" in refused(event(flow(ring="town")))


def test_design_given_as_a_url_string_becomes_a_reference() -> None:
    parsed = validate(event(flow("produce", "part", 1, "count", "site", design="https://x/okh")))
    assert parsed.flows()[0].design == DesignRef(url="https://x/okh")


def test_design_given_as_an_object_keeps_its_fields() -> None:
    design = {"url": "https://x/okh", "licence": "CERN-OHL-S-2.0", "mass_kg": 0.2}
    parsed = validate(event(flow("produce", "part", 1, "count", "site", design=design)))
    assert parsed.flows()[0].design == DesignRef(
        url="https://x/okh", licence="CERN-OHL-S-2.0", mass_kg=0.2
    )


def test_an_empty_design_url_is_refused() -> None:
    refused(event(flow("produce", "part", 1, "count", "site", design="")))


def test_fate_is_allowed_on_discard() -> None:
    parsed = validate(event(flow("discard", "plastic", 1, "kg", "city", fate="recycle")))
    assert parsed.flows()[0].fate is Fate.recycle


@pytest.mark.parametrize("action", [a.value for a in Action if a is not Action.discard])
def test_fate_on_a_flow_that_is_not_a_discard_is_refused(action: str) -> None:
    message = refused(event(flow(action, "plastic", 1, "kg", "city", fate="landfill")))
    assert "`fate` applies only to `discard` flows" in message


def test_unknown_flow_fields_are_refused() -> None:
    # extra="forbid" on flows: a misspelt `quantiy` must not pass as a flow without quantity.
    assert "colour" in refused(event(flow(colour="red")))


# Quantities ----------------------------------------------------------------------------------


def test_zero_quantity_is_accepted() -> None:
    assert validate(event(flow(quantity=0))).flows()[0].quantity == 0


@pytest.mark.parametrize("quantity", [-1.0, -1e-9, math.nan, math.inf, -math.inf])
def test_negative_or_non_finite_quantities_are_refused(quantity: float) -> None:
    message = refused(event(flow(quantity=quantity)))
    assert "quantity" in message


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_quantities_spelt_as_strings_are_refused(text: str) -> None:
    # Pydantic's lax mode parses these strings as floats; they must still be refused.
    data = flow()
    data["quantity"] = text
    refused(event(data))


def test_a_design_mass_must_be_finite() -> None:
    refused(event(flow(design={"url": "https://x", "mass_kg": math.inf})))


# Time ----------------------------------------------------------------------------------------


def test_missing_time_is_allowed_and_receive_time_stands_in() -> None:
    parsed = validate(event(flow(), time=None))
    assert parsed.time is None
    received = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event_time(parsed, received) == received


def test_event_time_prefers_the_events_own_time() -> None:
    parsed = validate(event(flow(), time="2026-03-10T10:00:00+01:00"))
    received = datetime(2026, 1, 2, tzinfo=UTC)
    assert event_time(parsed, received) == datetime(2026, 3, 10, 9, tzinfo=UTC)


@pytest.mark.parametrize("naive", ["2026-03-10T10:00:00", "2026-03-10 10:00:00"])
def test_time_without_an_offset_is_refused(naive: str) -> None:
    # A naive time would be read in some server's zone and land on the wrong local day.
    message = refused(event(flow(), time=naive))
    assert "time" in message and "timezone" in message


def test_time_with_z_or_an_offset_is_accepted() -> None:
    zulu = validate(event(flow(), time="2026-03-10T23:30:00Z")).time
    offset = validate(event(flow(), time="2026-03-11T00:30:00+01:00")).time
    assert zulu == offset == datetime(2026, 3, 10, 23, 30, tzinfo=UTC)


# Types ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", ["fabcity.flows.derive", "com.example.flow", "", "fabcity.Flow"])
def test_unknown_type_is_refused(type_: str) -> None:
    assert "type" in refused(event(flow(), type=type_))


def test_a_list_of_flows_is_accepted_in_order() -> None:
    flows = [flow("consume", "filament", 1, "kg", "city"), flow("produce", "part", 3, "count")]
    parsed = validate(event(flows))
    assert [(f.action, f.resource, f.quantity) for f in parsed.flows()] == [
        (Action.consume, "filament", 1.0),
        (Action.produce, "part", 3.0),
    ]


def test_an_empty_list_of_flows_is_refused() -> None:
    # An event that says nothing happened is almost always a sender bug.
    assert "at least 1 item" in refused(event([]))


def test_a_list_longer_than_the_limit_is_refused_and_the_limit_itself_accepted() -> None:
    at_limit = [flow() for _ in range(MAX_FLOWS_PER_EVENT)]
    assert len(validate(event(at_limit)).flows()) == MAX_FLOWS_PER_EVENT
    refused(event([*at_limit, flow()]))


def test_one_bad_flow_in_a_list_refuses_the_event() -> None:
    refused(event([flow(), flow(quantity=-1)]))


def test_flow_event_without_data_is_refused() -> None:
    body = event(flow())
    del body["data"]
    refused(body)


def _job(started: str, ended: str) -> dict[str, Any]:
    return {"status": "completed", "started": started, "ended": ended, "mass_kg": 0.1}


def test_machine_job_ending_before_it_started_is_refused() -> None:
    body = event(
        _job("2026-03-10T10:00:00+00:00", "2026-03-10T09:59:59+00:00"),
        type="fabcity.machine.job",
    )
    assert "`ended` is before `started`" in refused(body)


def test_machine_job_end_is_compared_across_offsets() -> None:
    # 10:30+01:00 is 09:30 UTC: before a 10:00 UTC start even though 10:30 > 10:00 as text.
    body = event(
        _job("2026-03-10T10:00:00+00:00", "2026-03-10T10:30:00+01:00"),
        type="fabcity.machine.job",
    )
    refused(body)


def test_machine_job_of_zero_length_is_accepted() -> None:
    body = event(
        _job("2026-03-10T10:00:00+00:00", "2026-03-10T10:00:00+00:00"),
        type="fabcity.machine.job",
    )
    parsed = validate(body)
    assert isinstance(parsed.data, MachineJobData)
    assert parsed.data.ended == parsed.data.started


def test_machine_job_with_naive_times_is_refused() -> None:
    body = event(_job("2026-03-10T10:00:00", "2026-03-10T11:00:00"), type="fabcity.machine.job")
    refused(body)


@pytest.mark.parametrize(
    "data",
    [{"energy_kwh_total": 120.5}, {"energy_kwh": 0.4}],
)
def test_meter_reading_with_exactly_one_field_is_accepted(data: dict[str, float]) -> None:
    parsed = validate(event(data, type="fabcity.meter.reading"))
    assert isinstance(parsed.data, MeterReadingData)
    assert parsed.data.model_dump(exclude_none=True) == data


@pytest.mark.parametrize("data", [{}, {"energy_kwh_total": 120.5, "energy_kwh": 0.4}])
def test_meter_reading_needs_exactly_one_of_its_two_fields(data: dict[str, float]) -> None:
    message = refused(event(data, type="fabcity.meter.reading"))
    assert "exactly one of `energy_kwh_total` and `energy_kwh`" in message


def test_data_of_one_type_is_not_accepted_under_another() -> None:
    # A flow sent with the meter type must not pass as an (empty) meter reading.
    refused(event(flow(), type="fabcity.meter.reading"))


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("fabcity.machine.job", _job("2026-03-10T10:00:00+00:00", "2026-03-10T11:00:00+00:00")),
        ("fabcity.meter.reading", {"energy_kwh": 1.0}),
        ("fabcity.scale.reading", {"net_kg": -0.5, "direction": "out"}),
        ("fabcity.device.status", {"online": True}),
    ],
)
def test_flows_is_empty_for_types_other_than_flow(type_: str, data: dict[str, Any]) -> None:
    parsed = validate(event(data, type=type_))
    assert parsed.type.value == type_
    assert parsed.flows() == []


def test_flows_of_a_single_flow_event_is_a_list_of_one() -> None:
    parsed = validate(event(flow(quantity=4)))
    assert isinstance(parsed.flows(), list)
    assert [f.quantity for f in parsed.flows()] == [4.0]


def test_a_datetime_object_with_a_non_utc_zone_keeps_its_instant() -> None:
    when = datetime(2026, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5)))
    parsed = validate(event(flow(), time=when))
    assert parsed.time == datetime(2026, 7, 1, 17, 0, tzinfo=UTC)
