"""OctoPrint MQTT plugin: `{base}/event/{Event}`, `{base}/progress/printing`, `{base}/mqtt`.

Jobs come from OctoPrint's own end events. `time` in PrintDone/PrintFailed/PrintCancelled is
the print's duration in seconds and `_timestamp` the end in unix seconds. The filament a job
used is known only from the progress messages' `printer_data` (the slicer's estimate, in mm,
when the plugin's `publish.printerData` is on): it is remembered per device and scaled by the
progress reached for a job that did not complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from fabcity.adapters import base
from fabcity.adapters.base import Decoded, Device, Message, Refused
from schemas.devices import OctoPrintSettings

# The plugin's base topic was `octoprint/` before it became `octoPrint/`: a device left on
# the default is found under both.
LEGACY_BASE = {"octoPrint": "octoprint"}

END_STATUS = {"PrintDone": "completed", "PrintFailed": "failed", "PrintCancelled": "cancelled"}


def bases(settings: OctoPrintSettings) -> list[str]:
    legacy = LEGACY_BASE.get(settings.base_topic)
    return [settings.base_topic, *([legacy] if legacy else [])]


def filters(settings: OctoPrintSettings) -> list[str]:
    return [f"{base}/#" for base in bases(settings)]


def identity(settings: OctoPrintSettings) -> str:
    return settings.base_topic


def decode(message: Message, device: Device, state: Mapping[str, Any]) -> Decoded:
    settings = device.settings
    assert isinstance(settings, OctoPrintSettings)
    rest = next(
        (message.topic[len(b) + 1 :] for b in bases(settings) if message.topic.startswith(b + "/")),
        None,
    )
    if rest is None:
        raise Refused(f"topic {message.topic!r} is not under {settings.base_topic!r}")
    if rest == "mqtt":
        word = message.payload.decode(errors="replace").strip().lower()
        if word not in ("connected", "disconnected"):
            raise Refused(f"unknown availability {word!r}; expected connected/disconnected")
        return base.availability(state, word == "connected", message)
    if rest == "progress/printing":
        return Decoded([], _progress(state, base.json_object(message)))
    if not rest.startswith("event/"):
        return Decoded([], dict(state))  # temperatures, slicing progress, metadata: not counted
    body = base.json_object(message)
    name = rest.removeprefix("event/")
    new = dict(state)
    stamped = base.unix_time(body.get("_timestamp"))
    when = stamped or message.received_at
    if name == "PrintStarted":
        new.update(job_path=base.text(body.get("path")), job_started=when.timestamp(), progress=0)
        new.pop("filament_mm", None)
        if stamped is None:
            new["job_started_received"] = True
        else:
            new.pop("job_started_received", None)
        return Decoded([], new)
    status = END_STATUS.get(name)
    if status is None:
        return Decoded([], new)
    # On a cancel OctoPrint sends PrintCancelled and also PrintFailed with reason
    # `cancelled`: the job is counted from PrintCancelled alone.
    if name == "PrintFailed" and body.get("reason") == "cancelled":
        return Decoded([], new)
    duration = base.number(body.get("time"))
    # The length is OctoPrint's analysis of the G-code: an estimate, not the extruder's count.
    modelled = ["length_mm"]
    if duration is not None and duration >= 0:
        started = when - timedelta(seconds=duration)
    elif new.get("job_started") is not None:
        started = base.unix_time(new["job_started"]) or when
        if stamped is None or new.get("job_started_received"):
            # A receive time at either end: late or bunched deliveries would show in it.
            modelled.append("started")
    else:
        started = when
    length = base.number(new.get("filament_mm"))
    if length is not None and status != "completed":
        length *= min(100.0, max(0.0, base.number(new.get("progress")) or 0.0)) / 100
    for key in ("job_path", "job_started", "job_started_received", "filament_mm", "progress"):
        new.pop(key, None)
    event = base.job_event(
        status, started, when, "job", settings, length_mm=length, modelled=modelled
    )
    return Decoded([event], new)


def _progress(state: Mapping[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    new = dict(state)
    progress = base.number(body.get("progress"))
    if progress is not None:
        new["progress"] = progress
    data = body.get("printer_data")
    if isinstance(data, dict):
        filament = ((data.get("job") or {}).get("filament")) or {}
        if isinstance(filament, dict):
            tools = [
                base.number((t or {}).get("length"))
                for t in filament.values()
                if isinstance(t, dict)
            ]
            lengths = [t for t in tools if t is not None]
            if lengths:
                new["filament_mm"] = sum(lengths)
    return new
