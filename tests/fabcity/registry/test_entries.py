"""Registering adapter devices: settings validated per adapter, one device per topic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.errors import Conflict, Invalid
from fabcity.registry import entries
from schemas import api
from schemas.devices import OctoPrintSettings
from tests.support.city import CITY, SITE, register


@pytest.fixture
def lab(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    yield factory
    engine.dispose()


def add(
    factory: sessionmaker[Session], slug: str, adapter: str, **settings: object
) -> dict[str, object]:
    with transaction(factory) as s:
        site = entries.get_site(s, entries.get_city(s, CITY), SITE)
        body = api.DeviceIn(slug=slug, name=slug, adapter=adapter, settings=settings)
        return dict(entries.create_device(s, site, body).settings)


def test_only_the_settings_given_are_stored_and_defaults_apply_when_read(
    lab: sessionmaker[Session],
) -> None:
    assert add(lab, "mk3", "octoprint", material="PLA") == {"material": "PLA"}
    with transaction(lab) as s:
        (device,) = entries.adapter_devices(s)
    assert device.source == f"/{CITY}/{SITE}/mk3"
    assert isinstance(device.settings, OctoPrintSettings)
    assert device.settings.base_topic == "octoPrint"


@pytest.mark.parametrize(
    ("adapter", "settings", "says"),
    [
        ("tasmota", {}, "topic: Field required"),
        ("octoprint", {"base_topic": "octo/#"}, "base_topic"),
        ("shelly", {"topic_prefix": "s", "meter": "gas"}, "meter"),
        ("octoprint", {"colour": "red"}, "colour"),
        ("teleport", {}, "unknown adapter"),
    ],
)
def test_bad_settings_are_refused_saying_what_to_fix(
    lab: sessionmaker[Session], adapter: str, settings: dict[str, object], says: str
) -> None:
    with pytest.raises(Invalid, match=says):
        add(lab, "x", adapter, **settings)


def test_flow_settings_of_the_metrics_engine_are_accepted_on_every_adapter(
    lab: sessionmaker[Session],
) -> None:
    stored = add(lab, "saw", "tasmota", topic="saw", resource="wood", input_ring="city")
    assert stored == {"topic": "saw", "resource": "wood", "input_ring": "city"}


def test_two_devices_on_one_topic_are_a_conflict(lab: sessionmaker[Session]) -> None:
    add(lab, "a", "tasmota", topic="plug-1")
    with pytest.raises(Conflict, match="plug-1"):
        add(lab, "b", "tasmota", topic="plug-1")
    add(lab, "c", "tasmota", topic="plug-2")
