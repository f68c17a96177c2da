"""Moonraker (Klipper): status on `{instance}/klipper/status` (combined, changed fields only)
or `{instance}/klipper/state/{object}/{field}` (split), availability on
`{instance}/moonraker/status`, job history in JSON-RPC answers on
`{instance}/moonraker/api/response`.

`eventtime` is Klipper's monotonic clock, not unix time: a job's end takes the receive
time. Its length is `print_stats.total_duration`, which the messages carry: a start taken
from when the start message arrived would be wrong whenever messages arrive late, all at
once (a backlog at the broker, a bridge restart). Only when no duration was ever sent is the
start the receive time, and the job says so (`modelled`). History entries carry unix
`start_time`/`end_time` and are the better record; their filament weight is the slicer's
estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from fabcity.adapters import base
from fabcity.adapters.base import Decoded, Device, Emitted, Message, Refused
from schemas.devices import MoonrakerSettings

ACTIVE = {"printing", "paused"}
STATE_END = {"complete": "completed", "error": "failed", "cancelled": "cancelled"}
HISTORY_END = {
    "completed": "completed",
    "cancelled": "cancelled",
    "error": "failed",
    "klippy_shutdown": "failed",
    "klippy_disconnect": "failed",
    "interrupted": "failed",
}
# Only `print_stats` matters for jobs; the rest (temperatures, positions) is not remembered.
KEPT = ("print_stats",)


def filters(settings: MoonrakerSettings) -> list[str]:
    base = settings.instance_name
    return [f"{base}/klipper/#", f"{base}/moonraker/status", f"{base}/moonraker/api/response"]


def identity(settings: MoonrakerSettings) -> str:
    return settings.instance_name


def decode(message: Message, device: Device, state: Mapping[str, Any]) -> Decoded:
    settings = device.settings
    assert isinstance(settings, MoonrakerSettings)
    rest = base.under(message, settings.instance_name)
    if rest == "moonraker/status":
        server = base.json_object(message).get("server")
        if server not in ("online", "offline"):
            raise Refused(f"unknown server state {server!r}; expected online/offline")
        return base.availability(state, server == "online", message)
    if rest == "moonraker/api/response":
        return _history(message, settings, state)
    new = dict(state)
    objects: dict[str, dict[str, Any]] = {
        k: dict(v) for k, v in (state.get("objects") or {}).items() if isinstance(v, dict)
    }
    sent: set[str] = set()  # the print_stats fields this message carries
    if rest == "klipper/status":
        status = base.json_object(message).get("status")
        if not isinstance(status, dict):
            raise Refused("klipper status without a `status` object")
        for name, fields in status.items():
            if name in KEPT and isinstance(fields, dict):
                objects.setdefault(name, {}).update(fields)
                sent.update(fields)
    elif rest.startswith("klipper/state/"):
        parts = rest.split("/")
        if len(parts) != 4:
            raise Refused(f"split status topic {message.topic!r} is not .../state/object/field")
        if parts[2] in KEPT:
            objects.setdefault(parts[2], {})[parts[3]] = base.json_object(message).get("value")
            sent.add(parts[3])
    else:
        return Decoded([], new)
    new["objects"] = objects
    stats = objects.get("print_stats", {})
    current = stats.get("state")
    previous = state.get("print_state")
    new["print_state"] = current
    events: list[Emitted] = []
    if current in ACTIVE and previous not in ACTIVE:
        new["job_started"] = message.received_at.timestamp()
        if "total_duration" not in sent:
            # The previous job's figure stays in print_stats until this job's first update:
            # it must not become this job's length.
            stats.pop("total_duration", None)
    elif previous in ACTIVE and current in STATE_END:
        received_start = base.unix_time(new.pop("job_started", None))
        ended = message.received_at
        total = base.number(stats.get("total_duration"))
        modelled: list[str] = []
        if total is not None and total >= 0:
            started = ended - timedelta(seconds=total)
        elif received_start is not None:
            started, modelled = received_start, ["started"]
        else:
            started = ended  # neither: no machine time is counted rather than a guess
        if settings.jobs_from == "status":
            # The id names the job by when its start was seen, so that it stays the same
            # however the duration is read.
            key = (received_start or started).timestamp()
            events.append(
                base.job_event(
                    STATE_END[current],
                    started,
                    ended,
                    f"job-{key!r}",
                    settings,
                    length_mm=base.number(stats.get("filament_used")),
                    modelled=modelled,
                )
            )
    return Decoded(events, new)


def _history(message: Message, settings: MoonrakerSettings, state: Mapping[str, Any]) -> Decoded:
    """`server.history.list` / `server.history.get_job` answers: one event per ended job.

    A list repeats jobs already seen; each job's id is its history `job_id`, so a repeat
    is a duplicate.
    """
    if settings.jobs_from != "history":
        return Decoded([], dict(state))
    result = base.json_object(message).get("result")
    if not isinstance(result, dict):
        return Decoded([], dict(state))  # another RPC's answer, or an error
    jobs = result.get("jobs")
    if not isinstance(jobs, list):
        jobs = [result["job"]] if isinstance(result.get("job"), dict) else []
    events = []
    for job in jobs:
        if not isinstance(job, dict):
            continue
        status = HISTORY_END.get(str(job.get("status")))
        started = base.unix_time(job.get("start_time"))
        ended = base.unix_time(job.get("end_time"))
        job_id = base.text(job.get("job_id"))
        if status is None or started is None or ended is None or job_id is None:
            continue  # in progress, or not a job record
        meta = _dict(job.get("metadata"))
        grams = base.number(meta.get("filament_weight_total")) if status == "completed" else None
        energy = None
        for aux in job.get("auxiliary_data") or []:
            if isinstance(aux, dict) and str(aux.get("units", "")).lower() == "kwh":
                energy = (energy or 0.0) + (base.number(aux.get("value")) or 0.0)
        event = base.job_event(
            status,
            started,
            ended,
            f"history-{job_id}",
            settings,
            length_mm=base.number(job.get("filament_used")),
            mass_kg=grams / 1000 if grams else None,
            material=base.text(meta.get("filament_type")),
            energy_kwh=energy,
            # The slicer's figure for the file, not a weighing.
            modelled=["mass_kg"],
        )
        events.append(
            Emitted(event.type, event.data, event.time, event.key, id=f"moonraker-job-{job_id}")
        )
    return Decoded(events, dict(state))


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
