from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fabcity.adapters.base import Refused
from schemas.events import EventType
from tests.fabcity.adapters.support import device, events, message, run

DONE = {
    "name": "bracket_v3.gcode",
    "path": "jobs/bracket_v3.gcode",
    "origin": "local",
    "size": 1631278,
    "owner": "alice",
    "time": 5423.871,
    "_event": "PrintDone",
    "_timestamp": 1767354324,
}


@pytest.mark.parametrize("base", ["octoPrint", "octoprint"])
def test_print_done_is_a_completed_job_ending_at_its_timestamp(base: str) -> None:
    dev = device("octoprint", material="PLA")
    (job,) = events(run(dev, [message(f"{base}/event/PrintDone", DONE)]))
    assert job.type is EventType.machine_job
    assert job.data["status"] == "completed"
    assert job.data["material"] == "PLA"
    ended = datetime.fromtimestamp(1767354324, UTC)
    assert datetime.fromisoformat(job.data["ended"]) == ended
    started = datetime.fromisoformat(job.data["started"])
    assert (ended - started).total_seconds() == pytest.approx(5423.871)


def test_a_custom_base_topic_does_not_also_listen_on_the_legacy_one() -> None:
    dev = device("octoprint", base_topic="lab/mk4")
    assert run(dev, [message("lab/mk4/event/PrintDone", DONE)])[0].events
    with pytest.raises(Refused):
        run(dev, [message("octoprint/event/PrintDone", DONE)])


def test_a_cancel_counts_once_though_octoprint_also_sends_print_failed() -> None:
    dev = device("octoprint")
    cancelled = {**DONE, "_event": "PrintCancelled", "time": 100.0}
    failed = {**DONE, "_event": "PrintFailed", "time": 100.0, "reason": "cancelled"}
    out = events(
        run(
            dev,
            [
                message("octoPrint/event/PrintCancelled", cancelled),
                message("octoPrint/event/PrintFailed", failed),
            ],
        )
    )
    assert [e.data["status"] for e in out] == ["cancelled"]


def test_an_error_is_a_failed_job_with_the_filament_of_the_progress_reached() -> None:
    dev = device("octoprint")
    progress = {
        "location": "local",
        "path": "jobs/bracket_v3.gcode",
        "progress": 25,
        "printer_data": {"job": {"filament": {"tool0": {"length": 2000.0, "volume": 4.8}}}},
        "_timestamp": 1767349000,
    }
    failed = {**DONE, "_event": "PrintFailed", "time": 812.52, "reason": "error"}
    out = events(
        run(
            dev,
            [
                message("octoPrint/event/PrintStarted", {"path": "jobs/bracket_v3.gcode"}),
                message("octoPrint/progress/printing", progress),
                message("octoPrint/event/PrintFailed", failed),
            ],
        )
    )
    (job,) = out
    assert job.data["status"] == "failed"
    assert job.data["length_mm"] == pytest.approx(500.0)


def test_availability_comes_from_the_will_and_only_changes_are_events() -> None:
    dev = device("octoprint")
    decoded = run(
        dev,
        [
            message("octoPrint/mqtt", "connected"),
            message("octoPrint/mqtt", "connected"),  # retained, seen again on resubscribe
            message("octoPrint/mqtt", "disconnected"),
            message("octoPrint/mqtt", "connected"),
        ],
    )
    assert [d.online for d in decoded] == [True, True, False, True]
    out = events(decoded)
    assert [e.data["online"] for e in out] == [True, False, True]
    assert len({e.key for e in out}) == 3  # so the three get three ids


def test_temperatures_are_not_counted_and_garbage_is_refused() -> None:
    dev = device("octoprint")
    assert not events(run(dev, [message("octoPrint/temperature/tool0", {"actual": 214.8})]))
    with pytest.raises(Refused, match="not JSON"):
        run(dev, [message("octoPrint/event/PrintDone", b"{nope")])
