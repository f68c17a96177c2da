from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from fabcity.adapters.base import Refused
from schemas.events import EventType
from tests.fabcity.adapters.support import T0, device, events, message, run

JOB = {
    "status": "completed",
    "started": "2026-01-02T10:15:00Z",
    "ended": "2026-01-02T10:45:34Z",
    "energy_kwh": 0.81,
}
PROPS = {
    "specversion": "1.0",
    "id": "9f1c2b7e-4d1a-4c7e-9d0e-7b3c2a1f0e11",
    "source": "urn:fablab:machine:laser-01",
    "type": "fabcity.machine.job",
    "time": "2026-01-02T10:45:34Z",
    "subject": "job/J-2026-0042",
}


def test_binary_mode_reads_the_attributes_from_user_properties() -> None:
    dev = device("cloudevents", topic="fablab/events/laser-01")
    (event,) = events(
        run(
            dev,
            [
                message(
                    "fablab/events/laser-01", JOB, properties=PROPS, content_type="application/json"
                )
            ],
        )
    )
    assert event.type is EventType.machine_job
    assert event.id == PROPS["id"]
    assert event.data == JOB
    assert event.time == datetime(2026, 1, 2, 10, 45, 34, tzinfo=UTC)
    assert event.extensions["devicesource"] == "urn:fablab:machine:laser-01"
    assert event.extensions["subject"] == "job/J-2026-0042"


def test_ce_prefixed_properties_and_structured_mode_are_read_too() -> None:
    dev = device("cloudevents", topic="t")
    prefixed = {f"ce_{k}": v for k, v in PROPS.items()}
    structured = {**PROPS, "data": JOB}
    out = events(
        run(
            dev,
            [
                message("t", JOB, properties=prefixed),
                message("t", structured, content_type="application/cloudevents+json"),
                message("t", structured),  # MQTT 3.1.1: no properties at all
            ],
        )
    )
    assert [e.id for e in out] == [PROPS["id"]] * 3


def test_a_foreign_event_type_is_refused_with_the_types_we_read() -> None:
    dev = device("cloudevents", topic="t")
    props = {**PROPS, "type": "org.example.fablab.job.completed"}
    with pytest.raises(Refused, match=r"fabcity\.machine\.job"):
        run(dev, [message("t", JOB, properties=props)])


def test_structured_bytes_data_is_decoded_from_data_base64() -> None:
    dev = device("cloudevents", topic="t")
    structured = {**PROPS, "data_base64": base64.b64encode(orjson.dumps(JOB)).decode()}
    (event,) = events(run(dev, [message("t", structured)]))
    assert event.data == JOB


def test_user_properties_that_cannot_name_an_attribute_are_not_forwarded() -> None:
    # A receiver that validates with a CloudEvents SDK would refuse the event for them.
    dev = device("cloudevents", topic="t")
    props = {**PROPS, "traceparent": "00-ab", "my_ext": "x", "a" * 21: "y", "ünï": "z"}
    (event,) = events(run(dev, [message("t", JOB, properties=props)]))
    assert set(event.extensions) == {"traceparent", "devicesource", "subject"}


URL = "http://192.168.1.40"
TOPIC = f"prusalink:{URL}"


def poll(state: str, progress: float, printing_s: int) -> dict[str, object]:
    return {
        "status": {"printer": {"state": state, "temp_nozzle": 214.9}},
        "job": {
            "id": 420,
            "state": state,
            "progress": progress,
            "time_printing": printing_s,
            "file": {
                "name": "bracket.bgcode",
                "path": "/usb/bracket.bgcode",
                "m_timestamp": 1767340000,
                "meta": {
                    "filament used [g]": 30.0,
                    "filament used [mm]": 10000.0,
                    "filament_type": "PETG",
                },
            },
        },
    }


def test_prusalink_polls_make_a_job_when_the_state_leaves_printing() -> None:
    dev = device("prusalink", url=URL)
    decoded = run(
        dev,
        [
            message(TOPIC, poll("PRINTING", 10.0, 600), at=600),
            message(TOPIC, poll("PRINTING", 90.0, 5400), at=5400),
            message(TOPIC, poll("FINISHED", 100.0, 6000), at=6000),
            message(TOPIC, poll("FINISHED", 100.0, 6000), at=6010),
        ],
    )
    jobs = [e for e in events(decoded) if e.type is EventType.machine_job]
    (job,) = jobs
    assert job.data["status"] == "completed"
    assert job.data["mass_kg"] == pytest.approx(0.030)
    assert job.data["material"] == "PETG"
    assert datetime.fromisoformat(job.data["started"]) == T0
    assert job.id is not None and job.id.startswith("prusalink-job-")


def test_a_stopped_print_counts_the_share_printed_and_unreachable_is_offline() -> None:
    dev = device("prusalink", url=URL)
    decoded = run(
        dev,
        [
            message(TOPIC, poll("PRINTING", 40.0, 600)),
            message(TOPIC, poll("STOPPED", 40.0, 600)),
            message(TOPIC, {"error": "ConnectTimeout"}),
        ],
    )
    assert [d.online for d in decoded] == [True, True, False]
    (job,) = [e for e in events(decoded) if e.type is EventType.machine_job]
    assert job.data["status"] == "cancelled"
    assert job.data["mass_kg"] == pytest.approx(0.012)
