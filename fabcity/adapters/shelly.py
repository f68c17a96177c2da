"""Shelly Gen2/Gen3: `<prefix>/status/<component>:<id>` (full component status),
`<prefix>/events/rpc` (`NotifyStatus` partial diffs, `NotifyFullStatus`), `<prefix>/online`.

Energy counters: `switch:N`/`pm1:N` `aenergy.total` in Wh; the Pro 3EM's `emdata:N`
`total_act` in Wh. `em:N` carries power only, nothing to count. Counters reset on
`Switch.ResetCounters` or a device reset (see `base.meter_delta`). `ts` is unix seconds (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fabcity.adapters import base
from fabcity.adapters.base import Decoded, Device, Emitted, Message, Refused
from schemas.devices import ShellySettings


def filters(settings: ShellySettings) -> list[str]:
    p = settings.topic_prefix
    return [f"{p}/online", f"{p}/status/+", f"{p}/events/rpc"]


def identity(settings: ShellySettings) -> str:
    return settings.topic_prefix


def _counter_kwh(component: str, status: Any, settings: ShellySettings) -> float | None:
    """The component's cumulative energy in kWh, if it is the device's meter."""
    if not isinstance(status, dict):
        return None
    kind, _, index = component.partition(":")
    if index != str(settings.channel):
        return None
    wh: float | None = None
    if settings.meter in ("switch", "pm1") and kind == settings.meter:
        aenergy = status.get("aenergy")
        wh = base.number(aenergy.get("total")) if isinstance(aenergy, dict) else None
    elif settings.meter == "em" and kind == "emdata":
        wh = base.number(status.get("total_act"))
    return wh / 1000 if wh is not None and wh >= 0 else None


def decode(message: Message, device: Device, state: Mapping[str, Any]) -> Decoded:
    settings = device.settings
    assert isinstance(settings, ShellySettings)
    rest = base.under(message, settings.topic_prefix)
    if rest == "online":
        word = message.payload.decode(errors="replace").strip()
        if word not in ("true", "false"):
            raise Refused(f"unknown availability {word!r}; expected true/false")
        return base.availability(state, word == "true", message)
    components: dict[str, Any]
    when = message.received_at
    if rest.startswith("status/"):
        components = {rest.removeprefix("status/"): base.json_object(message)}
    elif rest == "events/rpc":
        body = base.json_object(message)
        if body.get("method") not in ("NotifyStatus", "NotifyFullStatus"):
            return Decoded([], dict(state))
        params = body.get("params")
        if not isinstance(params, dict):
            raise Refused(f"{body.get('method')} without params")
        when = base.unix_time(params.get("ts")) or when
        components = params
    else:
        return Decoded([], dict(state))
    events: list[Emitted] = []
    new: dict[str, Any] = dict(state)
    for component, status in components.items():
        kwh = _counter_kwh(component, status, settings)
        if kwh is not None:
            event, new = base.meter_delta(new, kwh, when, order=message.received_at)
            events.extend([event] if event else [])
    return Decoded(events, new)
