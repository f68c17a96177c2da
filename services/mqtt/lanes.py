"""The bridge's side of the device adapters: which topics to subscribe to, what an MQTT 5
PUBLISH carries besides its payload, and the lane that stores device messages.

Device messages do not share the native writers: adapters keep per-device state (a job's
start, an energy counter, Sparkplug aliases), so one device's messages must be applied in
the order they arrived, one transaction after the other. One lane per bridge does that. The
adapter topics are plain (not shared) subscriptions: retained messages (wills, ESPHome
discovery configs) reach only plain subscriptions. With several bridges, exactly one must
read the device topics (`FABCITY_BRIDGE_ADAPTERS=false` on the others), or the states race.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import paho.mqtt.client as mqtt
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters.routing import minimal_filters, subscriptions
from fabcity.core.db import transaction
from fabcity.core.settings import Settings
from fabcity.ingest.intake import Incoming, Stored, store
from fabcity.ingest.topics import is_native
from fabcity.registry import entries
from services.mqtt.batching import take_batch, write_batches
from services.mqtt.client import AT_LEAST_ONCE

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Incoming)

# A lane's batch: up to this many messages, gathered for at most this long after the first.
LANE_BATCH_MESSAGES = 500
LANE_WAIT_S = 0.02
# How long `stop` waits for each of the lane's threads.
THREAD_JOIN_TIMEOUT_S = 30
# How much of a dead letter's reason goes to the log (the row keeps all of it).
LOGGED_REASON_CHARS = 300


def publish_properties(msg: mqtt.MQTTMessage) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """User properties and content type of an MQTT 5 PUBLISH (empty on 3.1.1)."""
    props = getattr(msg, "properties", None)
    if props is None:
        return (), None
    users = getattr(props, "UserProperty", None) or []
    content_type = getattr(props, "ContentType", None)
    return tuple((str(k), str(v)) for k, v in users), content_type


class DeviceLane(Generic[M]):
    """Subscribes to the adapter topics and stores device messages in arrival order."""

    def __init__(
        self,
        settings: Settings,
        factory: sessionmaker[Session],
        ack: Callable[[list[M]], None],
        nudge: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.enabled = settings.bridge_adapters
        self._ack = ack
        self._nudge = nudge
        self._filters: list[str] = []
        self._queue: queue.Queue[M] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stored = 0
        self.dead_lettered = 0

    # topics ------------------------------------------------------------------------------

    def filters(self) -> list[str]:
        return list(self._filters) if self.enabled else []

    def refresh(self) -> list[str]:
        """Re-read the registry; returns the filters that are new."""
        if not self.enabled:
            return []
        try:
            with transaction(self.factory) as session:
                devices = entries.adapter_devices(session)
        except Exception:
            log.exception("could not read the registered devices; keeping the topics I have")
            return []
        wanted = minimal_filters([*self.settings.mqtt_adapter_topics, *subscriptions(devices)])
        new = [f for f in wanted if f not in self._filters]
        self._filters = wanted
        return new

    def takes(self, topic: str) -> bool:
        return self.enabled and not is_native(topic, self.settings.mqtt_topic_prefix)

    def put(self, message: M) -> None:
        self._queue.put(message)

    # life --------------------------------------------------------------------------------

    def start(self, client: mqtt.Client) -> None:
        if not self.enabled:
            return
        self.refresh()

        def watch() -> None:
            # A device registered while the bridge runs is heard without a restart.
            while not self._stop.wait(self.settings.mqtt_adapter_refresh_s):
                new = self.refresh()
                if new and client.is_connected():
                    log.info("subscribing to the topics of new devices: %s", ", ".join(new))
                    client.subscribe([(f, AT_LEAST_ONCE) for f in new])

        self._threads = [
            threading.Thread(target=watch, name="bridge-device-topics", daemon=True),
            threading.Thread(target=self._loop, name="bridge-device-lane", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=THREAD_JOIN_TIMEOUT_S)

    # the writer --------------------------------------------------------------------------

    def _take(self) -> list[M]:
        return take_batch(self._queue, LANE_BATCH_MESSAGES, LANE_WAIT_S)

    def _loop(self) -> None:
        write_batches(
            self._take,
            lambda batch: store_batch(self.factory, batch),
            self._committed,
            self._stop,
            "device messages",
        )

    def _committed(self, batch: list[M], outcome: Stored) -> None:
        self._ack(batch)
        self.stored += outcome.result.accepted
        self.dead_lettered += len(outcome.dead)
        for m, reason in outcome.dead:
            log.warning("dead letter from %s: %s", m.topic, reason[:LOGGED_REASON_CHARS])
        if outcome.windows_marked:
            self._nudge()


def store_batch(factory: sessionmaker[Session], batch: list[M]) -> Stored:
    """Device messages stored in one transaction of their own (the lane's, a printer link's)."""
    with transaction(factory) as session:
        return store(session, batch)
