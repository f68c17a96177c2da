"""Sparkplug B: `spBv1.0/<group>/<TYPE>/<edge node>[/<device>]`, protobuf payloads.

A registered device is either an edge node (no `device_id`: it receives every message of the
node, so it sees the whole `seq` sequence) or one device behind a node (it receives the
node's N* messages and its own D* messages). Births carry metric names and aliases; data
messages may carry only aliases, so the aliases of the latest birth are remembered.
NDEATH is the node's MQTT will: it takes the node and all its devices offline, unless its
`bdSeq` differs from the current NBIRTH's (a stale will from an earlier connection).
Timestamps are unix milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fabcity.adapters import base, sparkplug_b
from fabcity.adapters.base import Decoded, Device, Emitted, Message, Refused
from schemas.devices import SparkplugSettings

NAMESPACE = "spBv1.0"
NODE_TYPES = {"NBIRTH", "NDATA", "NDEATH", "NCMD"}
DEVICE_TYPES = {"DBIRTH", "DDATA", "DDEATH", "DCMD"}
TO_KWH = {"Wh": 0.001, "kWh": 1.0}
TO_KG = {"g": 0.001, "kg": 1.0}


def host_state(topic: str) -> bool:
    """A Sparkplug host application's birth or death, `spBv1.0/STATE/<host_id>`.

    Hosts (SCADA systems, historians, and this platform's peers) publish them, retained, on
    the namespace a `spBv1.0/#` subscription reads. They say whether a host is online, not
    what a machine did: no device sends them, so they are not a device's message to refuse.
    """
    parts = topic.split("/")
    return len(parts) == 3 and parts[0] == NAMESPACE and parts[1] == "STATE"


def filters(settings: SparkplugSettings) -> list[str]:
    node = f"{NAMESPACE}/{settings.group_id}/+/{settings.edge_node_id}"
    return [node, f"{node}/{settings.device_id or '+'}"]


def identity(settings: SparkplugSettings) -> str:
    return f"{settings.group_id}/{settings.edge_node_id}/{settings.device_id or ''}"


def decode(message: Message, device: Device, state: Mapping[str, Any]) -> Decoded:
    settings = device.settings
    assert isinstance(settings, SparkplugSettings)
    parts = message.topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        raise Refused(f"topic {message.topic!r} is not spBv1.0/<group>/<type>/<node>[/<device>]")
    kind, node, target = parts[2], parts[3], parts[4] if len(parts) == 5 else None
    if parts[1] != settings.group_id or node != settings.edge_node_id:
        raise Refused(f"topic {message.topic!r} is not this device's edge node")
    if kind in ("NCMD", "DCMD"):
        return Decoded([], dict(state))  # commands to the node, not reports from it
    if (kind in NODE_TYPES) == (target is not None) or kind not in NODE_TYPES | DEVICE_TYPES:
        raise Refused(f"{kind} on {message.topic!r}: wrong message type or topic form")
    try:
        payload = sparkplug_b.decode(message.payload)
    except sparkplug_b.DecodeError as exc:
        raise Refused(f"payload is not a Sparkplug B protobuf: {exc}") from exc
    is_node = settings.device_id is None
    new: dict[str, Any] = dict(state)
    if is_node:
        new = _track_seq(new, kind, payload)

    if kind == "NBIRTH":
        bdseq = _metric_value(payload, "bdSeq")
        new["bdseq"] = int(bdseq) if isinstance(bdseq, int | float) else None
        if is_node:
            new["aliases"] = _aliases(payload)
            decoded = base.availability(new, True, message)
            return _metrics(message, payload, settings, decoded)
        return Decoded([], new)
    if kind == "NDEATH":
        bdseq = _metric_value(payload, "bdSeq")
        if bdseq is not None and new.get("bdseq") is not None and int(bdseq) != new["bdseq"]:
            return Decoded([], new)  # the will of an earlier session: the node is still up
        return base.availability(new, False, message)
    if kind == "NDATA":
        return (
            _metrics(message, payload, settings, Decoded([], new)) if is_node else Decoded([], new)
        )
    if target != settings.device_id and not is_node:
        raise Refused(f"{message.topic!r} is for device {target!r}, not this one")
    if is_node and target is not None:
        return Decoded([], new)  # a device's message, seen by its node only for `seq`
    if kind == "DBIRTH":
        new["aliases"] = _aliases(payload)
        return _metrics(message, payload, settings, base.availability(new, True, message))
    if kind == "DDEATH":
        return base.availability(new, False, message)
    return _metrics(message, payload, settings, Decoded([], new))


def _track_seq(state: dict[str, Any], kind: str, payload: sparkplug_b.Payload) -> dict[str, Any]:
    """One `seq` counter per node, 0–255, across NBIRTH/NDATA/DBIRTH/DDATA/DDEATH.

    A gap means lost messages; a passive reader cannot ask for a rebirth, so gaps are
    counted in the state for an operator to see.
    """
    if payload.seq is None or kind == "NDEATH":
        return state
    last = state.get("seq")
    if kind != "NBIRTH" and isinstance(last, int) and payload.seq != (last + 1) % 256:
        state["seq_gaps"] = int(state.get("seq_gaps", 0)) + 1
    state["seq"] = payload.seq
    return state


def _aliases(payload: sparkplug_b.Payload) -> dict[str, str]:
    return {str(m.alias): m.name for m in payload.metrics if m.alias is not None and m.name}


def _metric_value(payload: sparkplug_b.Payload, name: str) -> Any:
    return next((m.value for m in payload.metrics if m.name == name), None)


def _metrics(
    message: Message, payload: sparkplug_b.Payload, settings: SparkplugSettings, out: Decoded
) -> Decoded:
    aliases: dict[str, str] = out.state.get("aliases") or {}
    state = out.state
    events: list[Emitted] = list(out.events)
    for metric in payload.metrics:
        name = metric.name or aliases.get(str(metric.alias))
        if name is None:
            raise Refused(f"metric alias {metric.alias} is not in the last birth certificate")
        if metric.value is None:
            continue
        stamped = base.unix_time(metric.timestamp) or base.unix_time(payload.timestamp)
        when = stamped or message.received_at
        event: Emitted | None = None
        value = base.number(metric.value)
        if name == settings.energy_metric and value is not None and value >= 0:
            event, state = base.meter_delta(state, value * TO_KWH[settings.energy_unit], when)
        elif name == settings.weight_metric and value is not None:
            event, state = base.scale_reading(
                state,
                value * TO_KG[settings.weight_unit],
                when,
                settings.material,
                settings.direction,
                settings.scale,
            )
        elif name == settings.job_active_metric and isinstance(metric.value, bool):
            running = state.get("job_started") is not None
            if metric.value and not running:
                state = {**state, "job_started": when.timestamp()}
                if stamped is None:
                    state["job_started_received"] = True
            elif not metric.value and running:
                state = dict(state)
                started = base.unix_time(state.pop("job_started")) or when
                # A receive time at either end: a backlog or a restart bunches them up.
                received = state.pop("job_started_received", False) or stamped is None
                event = base.job_event(
                    "completed",
                    started,
                    when,
                    f"job-{started.timestamp()!r}",
                    settings,
                    modelled=["started"] if received else [],
                )
        if event is not None:
            events.append(event)
    return Decoded(events, state, out.online, out.error)
