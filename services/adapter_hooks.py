"""The bridge's side of the device adapters: which topics to subscribe to, which messages
are native, and what an MQTT 5 PUBLISH carries besides its payload. The adapters themselves
and the routing are in `fabcity.adapters`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TypeVar

import paho.mqtt.client as mqtt
from sqlalchemy.orm import Session, sessionmaker

from fabcity import registry
from fabcity.adapters.routing import minimal_filters, subscriptions
from fabcity.db import transaction
from fabcity.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


def publish_properties(msg: mqtt.MQTTMessage) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """User properties and content type of an MQTT 5 PUBLISH (empty on 3.1.1)."""
    props = getattr(msg, "properties", None)
    if props is None:
        return (), None
    users = getattr(props, "UserProperty", None) or []
    content_type = getattr(props, "ContentType", None)
    return tuple((str(k), str(v)) for k, v in users), content_type


def split(batch: Sequence[T], prefix: str) -> tuple[list[T], list[T]]:
    """Native-topic messages and device messages (for the adapters)."""
    head = prefix.rstrip("/") + "/"
    native: list[T] = []
    devices: list[T] = []
    for m in batch:
        (native if getattr(m, "topic", "").startswith(head) else devices).append(m)
    return native, devices


class AdapterTopics:
    """The adapter topic filters: the configured well-known roots plus the topics of every
    registered device, refreshed so a device registered while the bridge runs is heard."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session], shared: bool) -> None:
        self.settings = settings
        self.factory = factory
        self.shared = shared
        self._filters: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _wrap(self, topic_filter: str) -> str:
        # Shared subscriptions are MQTT 5 only (see Bridge.topic).
        return (
            f"$share/{self.settings.mqtt_share_group}/{topic_filter}"
            if self.shared
            else topic_filter
        )

    def filters(self) -> list[str]:
        return [self._wrap(f) for f in self._filters]

    def refresh(self) -> list[str]:
        """Re-read the registry; returns the filters that are new."""
        try:
            with transaction(self.factory) as session:
                devices = registry.adapter_devices(session)
        except Exception:
            log.exception("could not read the registered devices; keeping the topics I have")
            return []
        wanted = minimal_filters([*self.settings.mqtt_adapter_topics, *subscriptions(devices)])
        new = [f for f in wanted if f not in self._filters]
        self._filters = wanted
        return new

    def watch(self, client: mqtt.Client) -> None:
        def loop() -> None:
            while not self._stop.wait(self.settings.mqtt_adapter_refresh_s):
                new = self.refresh()
                if new and client.is_connected():
                    log.info("subscribing to the topics of new devices: %s", ", ".join(new))
                    client.subscribe([(self._wrap(f), 1) for f in new])

        self._thread = threading.Thread(target=loop, name="bridge-adapter-topics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
