"""A fast reader for the commonest event, `fabcity.flow`, beside the contract's pydantic models.

Fab labs post flows in batches of thousands; validating each with the pydantic models of
`schemas.events` costs 4-5 us per event, against about 1 us here (msgspec). The models stay the
contract: this reader accepts a subset of what they accept, with the same values, and
everything else (other event types, the shorthands, every error) goes to them, so that
refusals read the same whichever way an event came. `tests/schemas/test_fast.py` checks both
halves of that promise on generated events.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

from schemas.events import (
    DESIGN_URL,
    MAX_FLOWS_PER_EVENT,
    MAX_QUANTITY,
    Action,
    CloudEvent,
    EventType,
    Fate,
    FlowData,
    Ring,
)

_Quantity = Annotated[float, msgspec.Meta(ge=0, le=MAX_QUANTITY)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
# RFC 3339 as devices and clients write it, read by `datetime.fromisoformat`; the other forms
# the models take (no seconds, more than six digits of a second, a lower-case `t`) go to them.
_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)\Z")


class FastDesign(msgspec.Struct, forbid_unknown_fields=True):
    # `\Z`, not `$`: `$` would let a trailing newline through.
    url: Annotated[str, msgspec.Meta(max_length=2048, pattern=rf"^{DESIGN_URL.pattern}\Z")]
    licence: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    # The upper bound refuses infinity, as the model does.
    mass_kg: Annotated[float, msgspec.Meta(ge=0, le=1.7e308)] | None = None


class FastFlow(msgspec.Struct, forbid_unknown_fields=True):
    """`schemas.events.FlowData` without its shorthands (`cell`, a design given as its URL)."""

    action: Action
    resource: _Name
    quantity: _Quantity
    unit: _Name
    ring: Ring
    material: _Name | None = None
    fate: Fate | None = None
    recycled: bool | None = None
    design: FastDesign | None = None
    job: _Name | None = None
    mass_kg: _Quantity | None = None


class FastFlowEvent(msgspec.Struct, forbid_unknown_fields=True):
    """A `fabcity.flow` CloudEvent without extensions: an event with extension attributes (or
    `data_base64`) goes to the models, which check the attributes' names."""

    specversion: Literal["1.0"]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    type: Literal["fabcity.flow"]
    data: (
        FastFlow
        | Annotated[list[FastFlow], msgspec.Meta(min_length=1, max_length=MAX_FLOWS_PER_EVENT)]
    )
    time: Annotated[str, msgspec.Meta(pattern=_TIME.pattern)] | None = None
    subject: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    datacontenttype: Literal["application/json"] | None = None
    dataschema: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


class Read(msgspec.Struct):
    """What ingest needs of an event, however it was read."""

    id: str
    source: str
    type: EventType
    time: datetime | None
    flows: list[FastFlow] | list[FlowData]  # the flows of a `fabcity.flow`, else empty
    event: CloudEvent | None  # the model, when the models read it


def read_fast(raw: dict[str, Any]) -> Read | None:
    """The event, if it is a plain `fabcity.flow`; None when the models must read it."""
    try:
        return _finish(msgspec.convert(raw, FastFlowEvent))
    except msgspec.ValidationError:
        return None


_DECODER = msgspec.json.Decoder(FastFlowEvent)


def read_fast_json(text: bytes | msgspec.Raw) -> Read | None:
    """`read_fast` of an event's JSON text, straight from its bytes: no dict in between.
    msgspec reads duplicate keys as orjson and the models do (the last one counts)."""
    try:
        return _finish(_DECODER.decode(text))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _finish(event: FastFlowEvent) -> Read | None:
    try:
        when = None if event.time is None else datetime.fromisoformat(event.time)
    except ValueError:
        return None
    if when is not None and when.tzinfo is None:
        return None
    flows = event.data if isinstance(event.data, list) else [event.data]
    for flow in flows:
        if flow.fate is not None and flow.action is not Action.discard:
            return None
    return Read(event.id, event.source, EventType.flow, when, flows, None)


class Preread(NamedTuple):
    """An event read already (by `read_fast_json`, from the bytes it came as), with that JSON
    text, which is stored as it came: the MQTT bridge reads a message once, to check its
    source against the topic, and ingest does not read it again."""

    event: Read
    text: str


def read(raw: dict[str, Any]) -> Read:
    """The event, read fast when it can be; raises pydantic's `ValidationError` otherwise."""
    fast = read_fast(raw)
    if fast is not None:
        return fast
    event = CloudEvent.model_validate(raw)
    return Read(event.id, event.source, event.type, event.time, event.flows(), event)
