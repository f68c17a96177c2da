from __future__ import annotations

from datetime import datetime

from tests.fabcity.adapters.support import T0, device, events, message, run

REPORT = "device/01P00A381200123/report"
RUNNING = {
    "print": {
        "command": "push_status",
        "sequence_id": "2021",
        "gcode_state": "RUNNING",
        "mc_percent": "42",
        "mc_remaining_time": "58",
        "subtask_name": "bracket_v3",
        "nozzle_temper": "219.8",
        "ams": {
            "tray_now": "5",
            "ams": [
                {"id": "0", "tray": [{"id": "0", "tray_type": "PLA"}]},
                {"id": "1", "tray": [{"id": "1", "tray_type": "PETG"}]},
            ],
        },
    }
}
# P1/A1 printers send only what changed.
TEMPERATURE_ONLY = {"print": {"command": "push_status", "sequence_id": "2500", "bed_temper": "55"}}
FINISH = {
    "print": {
        "command": "push_status",
        "sequence_id": "2990",
        "gcode_state": "FINISH",
        "mc_percent": 100,
        "mc_remaining_time": 0,
    }
}


def test_delta_reports_are_merged_and_the_finish_ends_the_job() -> None:
    dev = device("bambu", serial="01P00A381200123")
    (job,) = events(
        run(
            dev,
            [
                message(REPORT, RUNNING, at=0),
                message(REPORT, TEMPERATURE_ONLY, at=30),  # no gcode_state: still running
                message(REPORT, FINISH, at=3600),
            ],
        )
    )
    assert job.data["status"] == "completed"
    assert job.data["material"] == "PETG"  # tray 5 = unit 1, tray 1
    assert datetime.fromisoformat(job.data["started"]) == T0
    assert (datetime.fromisoformat(job.data["ended"]) - T0).total_seconds() == 3600


def test_a_failed_print_is_a_failed_job_and_a_full_report_after_it_is_not_another() -> None:
    dev = device("bambu", serial="01P00A381200123", material="PLA")
    failed = {"print": {"command": "push_status", "gcode_state": "FAILED", "print_error": "1"}}
    out = events(
        run(
            dev,
            [
                message(REPORT, {"print": {**RUNNING["print"], "ams": None}}),
                message(REPORT, failed, at=10),
                message(REPORT, failed, at=20),
            ],
        )
    )
    assert [(e.data["status"], e.data["material"]) for e in out] == [("failed", "PLA")]


def test_the_session_with_the_printer_is_its_availability() -> None:
    dev = device("bambu", serial="01P00A381200123", host="192.168.1.50")
    session = "device/01P00A381200123/session"
    decoded = run(dev, [message(session, "online"), message(session, "offline")])
    assert [d.online for d in decoded] == [True, False]
    assert [e.data for e in events(decoded)] == [{"online": True}, {"online": False}]
