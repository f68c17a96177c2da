"""The MQTT bridge's pure parsing: topic to source, and message to CloudEvent object."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from fabcity.ingest.topics import MAX_PAYLOAD_BYTES as MAX_PAYLOAD
from fabcity.ingest.topics import Parsed, source_of, to_event
from schemas.events import CloudEvent
from schemas.fast import Preread
from tests.support.city import event, flow

PREFIX = "fabcity/v1"
TOPIC = f"{PREFIX}/testville/lab/printer/events"
SOURCE = "/testville/lab/printer"
RECEIVED = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)


def parse(payload: Any, topic: str = TOPIC) -> Parsed:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return to_event(topic, raw, PREFIX, RECEIVED)


def refusal(parsed: Parsed) -> str:
    assert parsed.event is None
    assert parsed.reason is not None
    return parsed.reason


# source_of -----------------------------------------------------------------------------------


def test_topic_names_the_device_source() -> None:
    assert source_of(TOPIC, PREFIX) == SOURCE


def test_a_trailing_slash_on_the_prefix_is_ignored() -> None:
    assert source_of(TOPIC, PREFIX + "/") == SOURCE


def test_a_multi_level_prefix() -> None:
    topic = "tenant/a/fabcity/v1/barcelona/ateneu/laser/events"
    assert source_of(topic, "tenant/a/fabcity/v1") == "/barcelona/ateneu/laser"


@pytest.mark.parametrize(
    "topic",
    [
        f"{PREFIX}/testville/lab/events",  # too few levels (a site, no device)
        f"{PREFIX}/testville/events",
        f"{PREFIX}/events",
        f"{PREFIX}/testville/lab/printer/sub/events",  # too many levels
        f"{PREFIX}/testville/lab/printer/events/extra",
        f"{PREFIX}/testville/lab/printer/status",  # wrong suffix
        f"{PREFIX}/testville/lab/printer/Events",
        f"{PREFIX}/testville/lab/printer/events/",  # an empty last level
        f"{PREFIX}//lab/printer/events",  # an empty level
        f"{PREFIX}/testville//printer/events",
        f"{PREFIX}/testville/lab//events",
        "other/v1/testville/lab/printer/events",  # other prefix
        "fabcity/v10/testville/lab/printer/events",  # the prefix must end at a level
        "fabcity/testville/lab/printer/events",
        "/fabcity/v1/testville/lab/printer/events",
        "",
    ],
)
def test_other_topics_have_no_source(topic: str) -> None:
    assert source_of(topic, PREFIX) is None


def test_a_wrong_topic_is_refused_with_a_reason_naming_the_pattern() -> None:
    reason = refusal(parse(flow(), topic=f"{PREFIX}/testville/lab/events"))
    assert f"{PREFIX}/testville/lab/events" in reason
    assert "{city}/{site}/{device}/events" in reason


# Full events ---------------------------------------------------------------------------------


def test_a_full_event_whose_source_matches_passes_through_unchanged() -> None:
    body = event(flow(), id="own-id", source=SOURCE, time="2026-03-10T08:00:00+00:00")
    body["traceparent"] = "00-abc-def-01"

    parsed = parse(body)

    assert parsed.reason is None
    # Its own id, time and extensions are kept: nothing of the envelope is replaced.
    assert parsed.event == body


def test_a_plain_flow_event_is_read_once_and_kept_as_it_came() -> None:
    body = event(flow(quantity=2.5), id="plain", source=SOURCE, time="2026-03-10T08:00:00Z")
    sent = orjson.dumps(body, option=orjson.OPT_INDENT_2)

    parsed = to_event(TOPIC, sent, PREFIX, RECEIVED)

    assert isinstance(parsed.event, Preread)
    assert parsed.event.text == sent.decode()  # stored as sent, not as re-encoded
    assert (parsed.event.event.id, parsed.event.event.source) == ("plain", SOURCE)
    assert parsed.event.event.time == datetime(2026, 3, 10, 8, tzinfo=UTC)
    assert [f.quantity for f in parsed.event.event.flows] == [2.5]


def test_a_plain_flow_event_of_another_source_is_refused_as_any_event_is() -> None:
    body = event(flow(), id="x", source="/testville/lab/laser")
    assert "does not match its topic" in refusal(parse(body))


@pytest.mark.parametrize(
    "source", ["/testville/lab", "/testville/lab/other", "/elsewhere/lab/printer", None]
)
def test_a_full_event_whose_source_mismatches_the_topic_is_refused(source: str | None) -> None:
    # A device may only speak for itself: the topic (guarded by the broker ACL) is the proof.
    body = event(flow(), source=SOURCE)
    if source is None:
        del body["source"]
    else:
        body["source"] = source

    reason = refusal(parse(body))

    assert repr(source) in reason
    assert repr(SOURCE) in reason
    assert "does not match" in reason


# Bare flows ----------------------------------------------------------------------------------


def test_a_bare_flow_gets_an_envelope() -> None:
    data = flow("consume", "filament", 0.25, "kg", "city")

    parsed = parse(data)

    assert parsed.reason is None
    assert parsed.event is not None
    envelope = parsed.event
    assert envelope["specversion"] == "1.0"
    assert envelope["type"] == "fabcity.flow"
    assert envelope["source"] == SOURCE
    assert envelope["data"] == data
    assert datetime.fromisoformat(envelope["time"]) == RECEIVED
    assert envelope["id"]
    # The envelope is a valid event of the contract.
    assert CloudEvent.model_validate(envelope).flows()[0].quantity == 0.25


def test_a_bare_list_of_flows_gets_an_envelope() -> None:
    data = [flow(), flow("produce", "part", 2, "count", "site")]
    parsed = parse(data)
    assert parsed.event is not None
    assert parsed.event["data"] == data
    assert len(CloudEvent.model_validate(parsed.event).flows()) == 2


def test_an_identical_message_gets_the_identical_id() -> None:
    # A broker redelivery must be a duplicate of the first delivery, even at another time.
    payload = orjson.dumps(flow())
    first = to_event(TOPIC, payload, PREFIX, RECEIVED)
    again = to_event(TOPIC, payload, PREFIX, datetime(2026, 3, 11, tzinfo=UTC))
    assert first.event is not None and again.event is not None
    assert first.event["id"] == again.event["id"]


def test_a_different_payload_gets_a_different_id() -> None:
    one = parse(flow(quantity=1.0))
    two = parse(flow(quantity=2.0))
    assert one.event is not None and two.event is not None
    assert one.event["id"] != two.event["id"]


def test_a_different_topic_gets_a_different_id() -> None:
    payload = flow()
    here = parse(payload)
    there = parse(payload, topic=f"{PREFIX}/testville/hub/printer/events")
    assert here.event is not None and there.event is not None
    assert there.event["source"] == "/testville/hub/printer"
    assert here.event["id"] != there.event["id"]


def test_the_id_is_of_the_bytes_so_reformatted_json_is_another_message() -> None:
    # The id hashes the bytes as sent, so only a byte-identical redelivery is a duplicate;
    # a sender that re-serialises must send full events with ids of its own.
    a = to_event(TOPIC, b"[1]", PREFIX, RECEIVED)
    b = to_event(TOPIC, b" [1]", PREFIX, RECEIVED)
    assert a.event is not None and b.event is not None
    assert a.event["data"] == b.event["data"]
    assert a.event["id"] != b.event["id"]


# Refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"not json", b"{", b"", b"\xff\xfe", b"{'a': 1}"])
def test_a_payload_that_is_not_json_is_refused(payload: bytes) -> None:
    assert "not JSON" in refusal(parse(payload))


@pytest.mark.parametrize("payload", [b"42", b'"flow"', b"true", b"null", b"1.5"])
def test_a_json_scalar_is_refused(payload: bytes) -> None:
    reason = refusal(parse(payload))
    assert "CloudEvent" in reason and "flow" in reason


def test_an_oversized_payload_is_refused() -> None:
    payload = b'{"pad": "' + b"x" * MAX_PAYLOAD + b'"}'
    reason = refusal(parse(payload))
    assert str(len(payload)) in reason
    assert str(MAX_PAYLOAD) in reason


def test_a_payload_of_exactly_the_limit_is_not_refused_for_size() -> None:
    head, tail = b'{"action": "consume", "pad": "', b'"}'
    payload = head + b"x" * (MAX_PAYLOAD - len(head) - len(tail)) + tail
    assert len(payload) == MAX_PAYLOAD
    parsed = parse(payload)
    # It becomes an envelope; the flow itself is judged later by the ingest path.
    assert parsed.reason is None
    assert parsed.event is not None
