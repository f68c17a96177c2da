from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fabcity.adapters.support import T0, device, events, message, run

PRINTING = {
    "eventtime": 3051555.377,
    "status": {
        "print_stats": {
            "filename": "jobs/bracket_v3.gcode",
            "total_duration": 1834.21,
            "print_duration": 1790.05,
            "filament_used": 2314.77,
            "state": "printing",
        },
        "extruder": {"temperature": 239.9, "target": 240.0},
    },
}
END = {
    "eventtime": 3057302.114,
    "status": {
        "print_stats": {
            "state": "complete",
            "total_duration": 7581.66,
            "print_duration": 7522.41,
            "filament_used": 9874.02,
        }
    },
}


def test_a_job_ends_on_the_print_stats_change_at_receive_time_not_klipper_time() -> None:
    dev = device("moonraker", instance_name="voron24")
    (job,) = events(
        run(
            dev,
            [
                message("voron24/klipper/status", PRINTING, at=0),
                message("voron24/klipper/status", {"eventtime": 3051600.0, "status": {}}, at=60),
                message("voron24/klipper/status", END, at=7600),
            ],
        )
    )
    assert job.data["status"] == "completed"
    assert job.data["length_mm"] == pytest.approx(9874.02)
    # eventtime (Klipper's monotonic clock) would put the job in 1970.
    assert datetime.fromisoformat(job.data["started"]) == T0
    assert (datetime.fromisoformat(job.data["ended"]) - T0).total_seconds() == 7600


def test_split_status_topics_make_the_same_job() -> None:
    dev = device("moonraker", instance_name="voron24")
    base = "voron24/klipper/state/print_stats"
    (job,) = events(
        run(
            dev,
            [
                message(f"{base}/state", {"eventtime": 1.0, "value": "printing"}, at=0),
                message(f"{base}/filament_used", {"eventtime": 2.0, "value": 321.5}, at=100),
                message(f"{base}/state", {"eventtime": 3.0, "value": "cancelled"}, at=200),
            ],
        )
    )
    assert job.data["status"] == "cancelled"
    assert job.data["length_mm"] == pytest.approx(321.5)


def test_a_retained_complete_state_after_a_restart_is_not_a_job() -> None:
    dev = device("moonraker", instance_name="voron24")
    assert not events(run(dev, [message("voron24/klipper/status", END)]))


HISTORY = {
    "jsonrpc": "2.0",
    "id": 5656,
    "result": {
        "count": 2,
        "jobs": [
            {
                "job_id": "000047",
                "filename": "jobs/bracket_v3.gcode",
                "status": "completed",
                "start_time": 1767346000.5,
                "end_time": 1767353581.2,
                "filament_used": 9874.02,
                "metadata": {"filament_weight_total": 29.4, "filament_type": "PETG"},
                "auxiliary_data": [
                    {"provider": "power", "name": "energy", "value": 0.42, "units": "kWh"}
                ],
            },
            {"job_id": "000048", "status": "in_progress", "start_time": 1767354000.0},
        ],
    },
}


def test_history_answers_give_jobs_keyed_by_their_history_id() -> None:
    dev = device("moonraker", instance_name="voron24", jobs_from="history")
    decoded = run(
        dev,
        [
            message("voron24/klipper/status", PRINTING),
            message("voron24/klipper/status", END),  # not counted: history is the source
            message("voron24/moonraker/api/response", HISTORY),
        ],
    )
    (job,) = events(decoded)
    assert job.id == "moonraker-job-000047"
    assert job.data["mass_kg"] == pytest.approx(0.0294)
    assert job.data["material"] == "PETG"
    assert job.data["energy_kwh"] == pytest.approx(0.42)
    assert datetime.fromisoformat(job.data["started"]) == datetime.fromtimestamp(1767346000.5, UTC)


def test_server_status_is_availability() -> None:
    dev = device("moonraker", instance_name="voron24")
    decoded = run(
        dev,
        [
            message("voron24/moonraker/status", {"server": "online"}),
            message("voron24/moonraker/status", {"server": "offline"}),
        ],
    )
    assert [d.online for d in decoded] == [True, False]
