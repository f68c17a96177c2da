"""CloudEvents 1.0 on MQTT: binary mode on MQTT 5, structured mode on 3.1.1 or 5.

Binary mode (the MQTT binding): the payload is the event's `data`, the PUBLISH content type
is `datacontenttype`, and every other attribute is a user property named as the attribute
(`ce_`/`ce-` prefixed names are accepted too, as some senders copy the HTTP header style).
Structured mode: the content type starts with `application/cloudevents`, or the payload is
a JSON object with `specversion`.

The device's registration names the source: the event's own `source` (often a URN such as
`urn:fablab:machine:laser-01`) is kept as the `devicesource` extension, and its `id` (unique
within that source) stays the id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from fabcity.adapters.base import Decoded, Device, Emitted, Message, Refused
from schemas.devices import CloudEventsSettings
from schemas.events import ATTRIBUTE_NAME, EventType, decode_data_base64

STRUCTURED = "application/cloudevents"
CORE = {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema"}


def filters(settings: CloudEventsSettings) -> list[str]:
    return [settings.topic]


def identity(settings: CloudEventsSettings) -> str:
    return settings.topic


def _attribute_name(name: str) -> str:
    lowered = name.lower()
    for prefix in ("ce_", "ce-"):
        if lowered.startswith(prefix):
            return lowered[len(prefix) :]
    return lowered


def _attributes(message: Message) -> tuple[dict[str, Any], Any]:
    content_type = (message.content_type or "").lower()
    structured = content_type.startswith(STRUCTURED)
    if not structured and not message.properties:
        structured = True  # MQTT 3.1.1 has no properties: structured is the only mode
    try:
        body = orjson.loads(message.payload) if message.payload else None
    except orjson.JSONDecodeError as exc:
        raise Refused(f"payload is not JSON: {exc}") from exc
    if structured:
        if not isinstance(body, dict):
            raise Refused("a structured CloudEvent must be a JSON object")
        try:
            body = decode_data_base64(body)  # as the SDKs write bytes data
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        return {k: v for k, v in body.items() if k != "data"}, body.get("data")
    if content_type and "json" not in content_type:
        raise Refused(f"data of content type {content_type!r}; fabcity events carry JSON")
    attributes = {_attribute_name(k): v for k, v in message.properties.items()}
    return attributes, body


def decode(message: Message, device: Device, state: Mapping[str, Any]) -> Decoded:
    attributes, data = _attributes(message)
    if attributes.get("specversion") != "1.0":
        raise Refused(f"specversion {attributes.get('specversion')!r}; expected '1.0'")
    try:
        kind = EventType(str(attributes.get("type")))
    except ValueError as exc:
        raise Refused(
            f"type {attributes.get('type')!r} is not one of {', '.join(t.value for t in EventType)}"
        ) from exc
    event_id = attributes.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise Refused("a CloudEvent needs a non-empty `id`")
    if len(event_id) > 256:
        event_id = "sha256-" + hashlib.sha256(event_id.encode()).hexdigest()
    when = message.received_at
    if isinstance(attributes.get("time"), str):
        try:
            when = datetime.fromisoformat(attributes["time"].replace("Z", "+00:00"))
        except ValueError as exc:
            raise Refused(f"time {attributes['time']!r} is not RFC 3339") from exc
        if when.tzinfo is None:
            raise Refused(f"time {attributes['time']!r} has no offset")
    # User properties that cannot name a CloudEvents attribute are the sender's own, not
    # extensions: they are left out rather than forwarded to receivers that would refuse them.
    extensions: dict[str, Any] = {
        k: v
        for k, v in attributes.items()
        if k not in CORE and k != "data" and ATTRIBUTE_NAME.match(k)
    }
    if isinstance(attributes.get("source"), str):
        extensions["devicesource"] = attributes["source"]
    if isinstance(attributes.get("subject"), str):
        extensions["subject"] = attributes["subject"]
    return Decoded([Emitted(kind, data, when, id=event_id, extensions=extensions)], dict(state))
