"""The bridge's side of the device adapters: what an MQTT 5 PUBLISH carries besides its
payload, and the lane that stores device messages. Which topics to subscribe to follows the
registry in `services.mqtt.watch`.

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
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import paho.mqtt.client as mqtt
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.settings import Settings
from fabcity.ingest.deadletters import CUT, KEPT, Incoming, Keeper, Kept
from fabcity.ingest.intake import Stored, store
from fabcity.ingest.topics import native_prefix
from services.mqtt.batching import take_batch, write_batches

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
    """Stores device messages in arrival order."""

    def __init__(
        self,
        settings: Settings,
        factory: sessionmaker[Session],
        ack: Callable[[list[M]], None],
        nudge: Callable[[], None],
        keeper: Keeper | None = None,
        counted: Callable[[Kept], None] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.enabled = settings.bridge_adapters
        self._native = native_prefix(settings.mqtt_topic_prefix)
        self._ack = ack
        self._nudge = nudge
        # Shared with the bridge's native writers: one quota per process.
        self.keeper = keeper or Keeper(settings.dead_letter_payload_bytes)
        self._counted = counted
        self._queue: queue.Queue[M] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stored = 0
        self.dead_lettered = 0  # messages refused
        self.letters_kept = 0  # of them, those stored as dead letters (the rest were counted)

    # topics ------------------------------------------------------------------------------

    def takes(self, topic: str) -> bool:
        # The receiving thread asks this of every message: the prefix is made once.
        return self.enabled and not topic.startswith(self._native)

    def put(self, message: M) -> None:
        self._queue.put(message)

    # life --------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled:
            return
        self._threads = [
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
            lambda batch: store_batch(self.factory, batch, self.keeper),
            self._committed,
            self._stop,
            "device messages",
        )

    def _committed(self, batch: list[M], outcome: Stored) -> None:
        # What was refused and not kept is acknowledged too: it could never become an event.
        self._ack(batch)
        self.stored += outcome.result.accepted
        self.dead_lettered += len(outcome.dead)
        self.letters_kept += len(outcome.kept.rows)
        log_dead_letters(outcome.dead, outcome.kept)
        self._counted(outcome.kept)
        if outcome.windows_marked:
            self._nudge()


def log_dead_letters(dead: Sequence[tuple[Incoming, str]], kept: Kept) -> None:
    """One line per letter kept, one for all those not kept: a flood that the quota stops
    must not fill the disk through the log instead."""
    for index in kept.rows:
        message, reason = dead[index]
        log.warning("dead letter from %s: %s", message.topic, reason[:LOGGED_REASON_CHARS])
    dropped = {o: n for o, n in kept.outcomes.items() if o not in (KEPT, CUT)}
    if dropped:
        log.warning(
            "refused and not kept as dead letters: %s",
            ", ".join(f"{n} {outcome}" for outcome, n in sorted(dropped.items())),
        )


def store_batch(
    factory: sessionmaker[Session], batch: list[M], keeper: Keeper | None = None
) -> Stored:
    """Device messages stored in one transaction of their own (the lane's, a printer link's)."""
    kept: Kept | None = None
    try:
        with transaction(factory) as session:
            outcome = store(session, batch, keeper=keeper)
            kept = outcome.kept
    except BaseException:
        # The batch is not stored and will be tried again: what it took of the quota was
        # not used.
        if kept is not None and keeper is not None:
            keeper.give_back(kept)
        raise
    return outcome
