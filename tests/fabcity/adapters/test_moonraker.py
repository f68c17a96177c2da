from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fabcity.adapters.support import T0, device, events, message, run
from tests.fixtures.devices import load

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


def test_a_job_ends_at_receive_time_not_klipper_time_and_lasts_its_total_duration() -> None:
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
    # eventtime (Klipper's monotonic clock) would put the job in 1970: the end is the receive
    # time, T0 + 7600 s, and the start that less total_duration: T0 + 7600 - 7581.66 s.
    assert (datetime.fromisoformat(job.data["ended"]) - T0).total_seconds() == 7600
    assert (datetime.fromisoformat(job.data["started"]) - T0).total_seconds() == pytest.approx(
        18.34
    )
    assert "modelled" not in job.data


def test_a_backlog_delivered_at_once_keeps_the_job_length_the_printer_reported() -> None:
    """The Moonraker messages of a whole job, held at the broker while the bridge was down
    and delivered within 0.2 s of each other: the job lasted 7,581.66 s, not 0.2 s."""
    dev = device("moonraker", instance_name="voron24")
    (job,) = events(
        run(
            dev,
            [
                message("voron24/klipper/status", load("moonraker-status-printing.json"), at=0.0),
                message("voron24/klipper/status", load("moonraker-status-complete.json"), at=0.2),
            ],
        )
    )
    started = datetime.fromisoformat(job.data["started"])
    ended = datetime.fromisoformat(job.data["ended"])
    # 7,581.66 s = 2 h 6 min 21.66 s = 2.106017 h of machine time.
    assert (ended - started).total_seconds() == pytest.approx(7581.66)
    assert "modelled" not in job.data


def test_without_a_duration_the_start_is_the_receive_time_and_says_it_is_modelled() -> None:
    dev = device("moonraker", instance_name="voron24")
    base = "voron24/klipper/state/print_stats"
    (job,) = events(
        run(
            dev,
            [
                message(f"{base}/state", {"eventtime": 1.0, "value": "printing"}, at=0),
                message(f"{base}/state", {"eventtime": 901.0, "value": "complete"}, at=900),
            ],
        )
    )
    assert (datetime.fromisoformat(job.data["started"]) - T0).total_seconds() == 0
    assert job.data["modelled"] == ["started"]


def test_the_previous_jobs_duration_is_not_the_next_jobs() -> None:
    """print_stats keeps the last job's figures until the next job's first update: a job
    whose duration never came must not take the previous one's 7,581.66 s."""
    dev = device("moonraker", instance_name="voron24")
    topic = "voron24/klipper/status"
    first, second = events(
        run(
            dev,
            [
                message(topic, load("moonraker-status-printing.json"), at=0),
                message(topic, load("moonraker-status-complete.json"), at=7600),
                message(
                    topic,
                    {"eventtime": 3058000.0, "status": {"print_stats": {"state": "printing"}}},
                    at=8000,
                ),
                message(
                    topic,
                    {"eventtime": 3058600.0, "status": {"print_stats": {"state": "cancelled"}}},
                    at=8600,
                ),
            ],
        )
    )
    assert "modelled" not in first.data
    started = datetime.fromisoformat(second.data["started"])
    assert (started - T0).total_seconds() == 8000  # its own start, as received
    assert second.data["modelled"] == ["started"]


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


def test_a_history_jobs_filament_weight_is_the_slicers_estimate() -> None:
    """`filament_weight_total` is what Moonraker's metadata parser read from the G-code
    (`; total filament used [g] = 25.3`): 0.0253 kg, modelled, not weighed."""
    dev = device("moonraker", instance_name="voron24", jobs_from="history")
    answer = load("moonraker-history-list.json")
    (job,) = events(run(dev, [message("voron24/moonraker/api/response", answer)]))
    assert job.data["mass_kg"] == pytest.approx(0.0253)
    assert job.data["modelled"] == ["mass_kg"]
    assert job.data["energy_kwh"] == pytest.approx(4.119977)
