"""The fast reader against the contract's models: it reads a subset of what they accept, with
the same values, and the plain events senders post are in that subset."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import MAX_QUANTITY, Action, CloudEvent, Fate, FlowData, Ring
from schemas.fast import FastFlow, Read, read, read_fast, read_fast_json
from tests.support.city import event, flow

FLOW_FIELDS = ("action", "resource", "quantity", "unit", "ring", "material", "fate", "recycled")
DESIGN_FIELDS = ("url", "licence", "mass_kg")


def _same_flow(fast: FastFlow, model: FlowData) -> None:
    for name in FLOW_FIELDS:
        a, b = getattr(fast, name), getattr(model, name)
        assert a == b and type(a) is type(b), name
    assert fast.job == model.job
    if model.design is None:
        assert fast.design is None
    else:
        assert fast.design is not None
        for name in DESIGN_FIELDS:
            assert getattr(fast.design, name) == getattr(model.design, name), name


def _model(raw: dict[str, Any]) -> CloudEvent | None:
    try:
        return CloudEvent.model_validate(raw)
    except ValidationError:
        return None


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Fifteen draws in sixteen from `good`: most events must be valid for the test to say much."""
    return st.sampled_from([good] * 15 + [bad]).flatmap(lambda chosen: chosen)


# Values near the edges of what the models accept, and past them.
texts = mostly(
    st.one_of(
        st.sampled_from(["filament", "kg", "PLA", "a" * 100, "é" * 100]), st.text(min_size=1)
    ),
    st.one_of(st.sampled_from(["", "a" * 101]), st.integers(), st.none()),
)
numbers = mostly(
    st.one_of(
        st.floats(min_value=0, max_value=MAX_QUANTITY),
        st.integers(0, int(MAX_QUANTITY)),
        st.sampled_from([0, 0.0, -0.0, 0.25, MAX_QUANTITY]),
    ),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([-1, MAX_QUANTITY * (1 + 1e-15), 10**30, True, "0.25", "1", None]),
    ),
)


@st.composite
def times(draw: st.DrawFn) -> Any:
    when = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    day, clock = (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}",
        f"{when.hour:02d}:{when.minute:02d}",
    )
    text = day + draw(st.sampled_from("Tt ")) + clock
    seconds = draw(st.booleans())
    if seconds:
        text += f":{when.second:02d}"
    digits = draw(st.integers(0, 9))
    if digits and seconds:
        text += "." + f"{when.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    minutes = draw(st.integers(-24 * 60, 24 * 60))
    sign = "-" if minutes < 0 else "+"
    zone = draw(
        st.sampled_from(["Z", "z", "", f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"])
    )
    return draw(mostly(st.just(text + zone), st.one_of(st.just(when.isoformat()), numbers, texts)))


def enum_values(members: list[str]) -> st.SearchStrategy[Any]:
    return mostly(st.sampled_from(members), st.sampled_from(["cell", "Consume", "", None, 1]))


@st.composite
def designs(draw: st.DrawFn) -> Any:
    url = draw(mostly(st.just("https://example.org/okh.toml"), texts))
    body: dict[str, Any] = {"url": url}
    if draw(st.booleans()):
        body["licence"] = draw(st.one_of(st.just("CERN-OHL-S-2.0"), texts, st.none()))
    if draw(st.booleans()):
        body["mass_kg"] = draw(numbers)
    if draw(st.integers(0, 9)) == 0:
        body["colour"] = "red"
    return draw(mostly(st.one_of(st.just(body), st.none()), st.one_of(st.just(url), numbers)))


@st.composite
def flows(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {
        "action": draw(enum_values(list(Action))),
        "resource": draw(texts),
        "quantity": draw(numbers),
        "unit": draw(texts),
        "ring": draw(enum_values(list(Ring))),
    }
    optional = {
        "material": texts,
        "fate": enum_values(list(Fate)),
        "recycled": mostly(st.booleans(), numbers),
        "design": designs(),
        "job": texts,
    }
    for name, values in optional.items():
        # A fate is for discards; on other actions the models refuse it.
        wanted = body["action"] == "discard" or draw(st.integers(0, 9)) == 0
        if draw(st.booleans()) and (name != "fate" or wanted):
            body[name] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        del body[draw(st.sampled_from(sorted(body)))]
    if draw(st.integers(0, 19)) == 0:
        body["colour"] = "red"
    return body


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(
        mostly(
            st.one_of(flows(), st.lists(flows(), min_size=1, max_size=3)),
            st.one_of(st.none(), numbers),
        )
    )
    body: dict[str, Any] = {
        "specversion": draw(mostly(st.just("1.0"), st.sampled_from(["1", 1.0]))),
        "id": draw(mostly(st.just("e-1"), st.one_of(st.just("x" * 257), texts))),
        "source": draw(mostly(st.just("/bcn/lab"), texts)),
        "type": draw(st.sampled_from(["fabcity.flow"] * 8 + ["fabcity.meter.reading", "x"])),
        "data": data,
    }
    optional = {
        "time": times(),
        "subject": texts,
        "datacontenttype": mostly(st.just("application/json"), st.just("text/plain")),
        "dataschema": texts,
        "traceparent": texts,  # an extension attribute
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            body[name] = draw(mostly(values, st.none()))
    return body


@settings(max_examples=1500, deadline=None)
@given(events())
def test_what_the_fast_reader_takes_the_models_take_with_the_same_values(
    raw: dict[str, Any],
) -> None:
    _agree(read_fast(raw), _model(raw))
    try:
        text = orjson.dumps(raw)
    except orjson.JSONEncodeError:
        return  # JSON cannot hold it (an integer past 64 bits): no text to read
    # From the JSON text, as a batch's events reach ingest: the same as from its dict.
    parsed = orjson.loads(text)
    from_text = read_fast_json(text)
    assert (from_text is None) == (read_fast(parsed) is None)
    _agree(from_text, _model(parsed))


def _agree(fast: Read | None, model: CloudEvent | None) -> None:
    if fast is None:
        return
    assert model is not None, "the fast reader took an event the models refuse"
    assert (fast.id, fast.source, fast.type) == (model.id, model.source, model.type)
    assert fast.time == model.time
    if model.time is not None:
        assert fast.time is not None and fast.time.utcoffset() == model.time.utcoffset()
    model_flows = model.flows()
    assert len(fast.flows) == len(model_flows)
    for a, b in zip(fast.flows, model_flows, strict=True):
        assert isinstance(a, FastFlow)
        _same_flow(a, b)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.builds(
            flow,
            action=st.sampled_from(list(Action)),
            quantity=st.floats(0, MAX_QUANTITY),
            ring=st.sampled_from(["site", "city", "region", "beyond"]),
        ),
        min_size=1,
        max_size=3,
    ),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(-14 * 60, 14 * 60),
    st.integers(0, 6),
)
def test_plain_flow_events_are_read_fast(
    body: list[dict[str, Any]], when: datetime, minutes: int, digits: int
) -> None:
    """What devices and clients write: RFC 3339 with up to microseconds, Z or an offset."""
    stamp = when.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    text = stamp.isoformat(timespec="seconds")
    if digits:
        text = text[:19] + "." + f"{stamp.microsecond:06d}"[:digits] + text[19:]
    raw = event(body if len(body) > 1 else body[0], time=text.replace("+00:00", "Z"))
    fast = read_fast(raw)
    assert fast is not None
    model = CloudEvent.model_validate(raw)
    assert fast.time == model.time and len(fast.flows) == len(body)


def test_shorthands_and_other_types_are_read_by_the_models() -> None:
    cell = event(flow(ring="cell", design="https://example.org/okh.toml"))
    assert read_fast(cell) is None
    got = read(cell)
    assert got.event is not None and got.flows[0].ring is Ring.site
    meter = event({"energy_kwh": 1.5}, type="fabcity.meter.reading")
    assert read_fast(meter) is None
    assert read(meter).event is not None


def test_fate_on_a_consume_is_left_to_the_models_message() -> None:
    raw = event(flow(action="consume", fate="recycle"))
    assert read_fast(raw) is None
    try:
        read(raw)
    except ValidationError as exc:
        assert "`fate` applies only to `discard` flows" in str(exc)
    else:
        raise AssertionError("accepted a fate on a consume")
