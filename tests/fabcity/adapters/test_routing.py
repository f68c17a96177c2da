from __future__ import annotations

import pytest

from fabcity.adapters.base import Device
from fabcity.adapters.routing import (
    Router,
    covers,
    minimal_filters,
    subscriptions,
    topic_matches,
)
from fabcity.ingest.intake import envelope
from tests.fabcity.adapters.support import device, message, run


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("octoPrint/#", "octoPrint/event/PrintDone", True),
        ("octoPrint/#", "octoprint/event/PrintDone", False),
        ("+/klipper/status", "voron24/klipper/status", True),
        ("+/klipper/status", "voron24/klipper/state/x", False),
        ("spBv1.0/g/+/n", "spBv1.0/g/NDEATH/n", True),
        ("spBv1.0/g/+/n", "spBv1.0/g/DDATA/n/d", False),
        ("#", "$SYS/broker/load", False),
        ("a/#", "a", True),
    ],
)
def test_topic_matching(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_covered_filters_are_dropped_so_the_broker_sends_each_message_once() -> None:
    assert covers("tele/#", "tele/plug/#")
    assert covers("+/online", "shelly-1/online")
    assert not covers("tele/+", "tele/plug/#")
    assert minimal_filters(["tele/#", "tele/plug/#", "stat/plug/#", "+/online", "x/online"]) == [
        "+/online",
        "stat/plug/#",
        "tele/#",
    ]


def with_id(d: Device, n: int) -> Device:
    return Device(n, d.source + str(n), d.adapter, d.settings, d.timezone)


def test_a_node_death_reaches_the_node_and_each_of_its_devices_only() -> None:
    node = with_id(device("sparkplug", group_id="g", edge_node_id="n"), 1)
    d1 = with_id(device("sparkplug", group_id="g", edge_node_id="n", device_id="d1"), 2)
    d2 = with_id(device("sparkplug", group_id="g", edge_node_id="n", device_id="d2"), 3)
    other = with_id(device("sparkplug", group_id="g", edge_node_id="m"), 4)
    router = Router([node, d1, d2, other])
    assert [d.id for d in router.devices_for("spBv1.0/g/NDEATH/n")] == [1, 2, 3]
    assert [d.id for d in router.devices_for("spBv1.0/g/DDATA/n/d2")] == [1, 3]
    assert router.devices_for("spBv1.0/h/NDEATH/n") == []


def test_printers_the_bridge_connects_to_are_not_subscribed_on_the_city_broker() -> None:
    bridged = device("bambu", serial="A1")
    direct = with_id(device("bambu", serial="B2", host="192.168.1.9"), 2)
    polled = with_id(device("prusalink", url="http://printer"), 3)
    assert subscriptions([bridged, direct, polled]) == [
        "device/A1/report",
        "device/A1/session",
    ]
    assert [d.id for d in Router([direct]).devices_for("device/B2/report")] == [2]


def test_a_redelivered_message_gets_the_same_event_id_and_another_message_another() -> None:
    dev = device("octoprint")
    done = {"time": 10.0, "_event": "PrintDone", "_timestamp": 1767354324}
    first = message("octoPrint/event/PrintDone", done)
    again = message("octoPrint/event/PrintDone", done, at=5)  # received later, same bytes
    other = message("octoPrint/event/PrintDone", {**done, "_timestamp": 1767354999})
    ids = [envelope(dev, m, run(dev, [m])[0].events[0])["id"] for m in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].startswith("octoprint-")
