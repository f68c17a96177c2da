"""Bambu Lab: `device/{serial}/report` from the printer's own broker (LAN mode, TLS 8883).

X1 printers push the whole `print` object; P1 and A1 push only the keys that changed, so the
keys a job needs are merged into the remembered state. Many numbers arrive as strings. The
reports carry no time: the receive time is used, and a job's start is `modelled`. Jobs end on
the `gcode_state` change from running to FINISH (completed) or FAILED (failed; Bambu reports a
stopped print this way too).

The printer has no will message: availability is the bridge's session with the printer,
which the per-printer client reports as `online`/`offline` on `device/{serial}/session`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fabcity.adapters import base
from fabcity.adapters.base import Decoded, Device, Emitted, Message, Refused
from schemas.devices import BambuSettings

ACTIVE = {"RUNNING", "PAUSE", "PREPARE", "SLICING"}
END = {"FINISH": "completed", "FAILED": "failed"}
KEPT = ("gcode_state", "subtask_name", "gcode_file", "mc_percent")
# `tray_now` 254 is the external spool (`vt_tray`); 255 means none loaded.
EXTERNAL_TRAY = "254"


def report_topic(settings: BambuSettings) -> str:
    return f"device/{settings.serial}/report"


def session_topic(settings: BambuSettings) -> str:
    return f"device/{settings.serial}/session"


def filters(settings: BambuSettings) -> list[str]:
    return [report_topic(settings), session_topic(settings)]


def identity(settings: BambuSettings) -> str:
    return settings.serial


def decode(message: Message, device: Device, state: Mapping[str, Any]) -> Decoded:
    settings = device.settings
    assert isinstance(settings, BambuSettings)
    if message.topic == session_topic(settings):
        word = message.payload.decode(errors="replace").strip()
        if word not in ("online", "offline"):
            raise Refused(f"unknown session state {word!r}")
        return base.availability(state, word == "online", message)
    if message.topic != report_topic(settings):
        raise Refused(f"topic {message.topic!r} is not {report_topic(settings)!r}")
    report = base.json_object(message).get("print")
    new = dict(state)
    if not isinstance(report, dict) or report.get("command") != "push_status":
        return Decoded([], new)  # command replies, info, other report kinds
    merged = dict(state.get("print") or {})
    merged.update({k: report[k] for k in KEPT if k in report})
    new["print"] = merged
    material = _material(report)
    if material:
        new["material"] = material
    current = base.text(merged.get("gcode_state"))
    previous = state.get("gcode_state")
    new["gcode_state"] = current
    events: list[Emitted] = []
    if current in ACTIVE and previous not in ACTIVE:
        new["job_started"] = message.received_at.timestamp()
    elif previous in ACTIVE and current in END:
        started = base.unix_time(new.pop("job_started", None)) or message.received_at
        events.append(
            base.job_event(
                END[current],
                started,
                message.received_at,
                f"job-{started.timestamp()!r}",
                settings,
                material=base.text(new.get("material")),
                # Both ends are receive times: the reports carry neither a time nor a duration.
                modelled=["started"],
            )
        )
    return Decoded(events, new)


def _material(report: dict[str, Any]) -> str | None:
    """The filament type of the tray in use, from the AMS or the external spool."""
    ams = report.get("ams")
    if not isinstance(ams, dict):
        return None
    tray_now = str(ams.get("tray_now", ""))
    if tray_now == EXTERNAL_TRAY:
        vt = report.get("vt_tray")
        return base.text(vt.get("tray_type")) if isinstance(vt, dict) else None
    if not tray_now.isdigit():
        return None
    index = int(tray_now)
    # Trays are numbered across units: unit index * 4 + tray id.
    for unit in ams.get("ams") or []:
        if not isinstance(unit, dict):
            continue
        for tray in unit.get("tray") or []:
            if not isinstance(tray, dict):
                continue
            unit_id = int(str(unit.get("id", "0"))) if str(unit.get("id", "0")).isdigit() else 0
            tray_id = str(tray.get("id", ""))
            if tray_id.isdigit() and unit_id * 4 + int(tray_id) == index:
                return base.text(tray.get("tray_type"))
    return None
