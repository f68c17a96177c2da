"""PrusaLink: polled over HTTP (`GET /api/v1/status` and `/api/v1/job`); no push.

The poller hands each round to the adapter as one message on `prusalink:<url>` whose payload
is `{"status": …, "job": …}` (job null when the printer answered 204: no job), or
`{"error": "…"}` when the printer could not be reached, which means offline. A job ends when
its `state` goes from PRINTING/PAUSED to FINISHED, STOPPED or ERROR; between two polls a
short job can come and go unseen, so the poll interval bounds what is missed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from fabcity.adapters import base
from fabcity.adapters.base import Decoded, Device, Emitted, Message, Refused
from schemas.devices import PrusaLinkSettings

ACTIVE = {"PRINTING", "PAUSED"}
END = {"FINISHED": "completed", "STOPPED": "cancelled", "ERROR": "failed"}


def topic(settings: PrusaLinkSettings) -> str:
    return f"prusalink:{settings.url.rstrip('/')}"


def filters(settings: PrusaLinkSettings) -> list[str]:
    return [topic(settings)]  # the poller's messages; nothing is subscribed


def identity(settings: PrusaLinkSettings) -> str:
    return settings.url.rstrip("/")


def decode(message: Message, device: Device, state: Mapping[str, Any]) -> Decoded:
    settings = device.settings
    assert isinstance(settings, PrusaLinkSettings)
    if message.topic != topic(settings):
        raise Refused(f"{message.topic!r} is not this printer's address {topic(settings)!r}")
    body = base.json_object(message)
    if "error" in body:
        return base.availability(state, False, message)
    up = base.availability(state, True, message)
    new = up.state
    job = body.get("job") if isinstance(body.get("job"), dict) else None
    status = _dict(body.get("status"))
    printer = _dict(status.get("printer"))
    current = base.text((job or {}).get("state")) or base.text(printer.get("state"))
    previous = state.get("job_state")
    new["job_state"] = current
    events = list(up.events)
    if job is not None and current in ACTIVE:
        new["job"] = _remember(job)
    elif previous in ACTIVE and current in END:
        last = dict(new.pop("job", None) or {})
        if job is not None:
            last.update({k: v for k, v in _remember(job).items() if v is not None})
        events.append(_ended(END[current], last, message, settings))
    return Decoded(events, new, up.online)


def _remember(job: dict[str, Any]) -> dict[str, Any]:
    file = _dict(job.get("file"))
    meta = _dict(file.get("meta"))
    return {
        "id": job.get("id"),
        "path": base.text(file.get("path")) or base.text(file.get("name")),
        "file_time": base.number(file.get("m_timestamp")),
        "time_printing": base.number(job.get("time_printing")),
        "progress": base.number(job.get("progress")),
        # Slicer estimates for the whole file; keys contain spaces and brackets.
        "grams": base.number(meta.get("filament used [g]")),
        "length_mm": base.number(meta.get("filament used [mm]")),
        "material": base.text(meta.get("filament_type")),
    }


def _ended(
    status: str, job: dict[str, Any], message: Message, settings: PrusaLinkSettings
) -> Emitted:
    ended = message.received_at
    started = ended - timedelta(seconds=base.number(job.get("time_printing")) or 0)
    share = (
        1.0 if status == "completed" else min(1.0, (base.number(job.get("progress")) or 0) / 100)
    )
    length = base.number(job.get("length_mm"))
    grams = base.number(job.get("grams"))
    event = base.job_event(
        status,
        started,
        ended,
        "job",
        settings,
        length_mm=length * share if length is not None else None,
        mass_kg=grams * share / 1000 if grams is not None else None,
        material=base.text(job.get("material")),
        # `filament used [g]`/`[mm]` are the slicer's estimates for the file.
        modelled=["mass_kg", "length_mm"],
    )
    # Polls differ (temperatures, times), so the id comes from the job, not the message.
    ident = f"{job.get('id')}|{job.get('path')}|{job.get('file_time')}"
    return Emitted(
        event.type,
        event.data,
        event.time,
        event.key,
        id="prusalink-job-" + hashlib.sha256(ident.encode()).hexdigest()[:32],
    )


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
