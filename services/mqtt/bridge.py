"""The MQTT bridge: device messages in, committed events out, acknowledged only after commit.

The paho network thread does nothing but put each message on a queue: a bare paho subscriber
is the bottleneck LIMITS.md measured, so the client is `services.mqtt.client.Client`, which
reads in large chunks and acknowledges a batch in one write. A writer thread takes batches
off the queue, runs the one ingest path in one transaction, dead-letters what cannot become an
event, commits, and only then acknowledges every message of the batch. A bridge that dies
before acknowledging gets the messages again from the broker (fixed client id, persistent
session); the events are keyed by `(source, id)`, so the repeat is stored once.

What cannot become an event is kept as a dead letter within bounds (`fabcity.ingest.
deadletters`): a prefix of its payload, not again when the same topic and bytes are already
kept, and no more than the process's quota per device, per city and in all; what is not kept
is counted in `fabcity_dead_letters_total` and acknowledged all the same, since it could
never become an event and the broker would only deliver it again. Retained messages are
handled by the same rules, deliberately: the broker sends them again at every (re)subscribe,
so a retained message that becomes an event is a duplicate the second time, and one that is
refused is a repeat of the letter already kept.

The bridge that reads the device topics (`bridge_adapters`) follows the registry while it
runs (`services.mqtt.watch`): within a second of a device's registration, change, retirement
or deletion it (un)subscribes its topics and starts or stops its printer link, and records
since when the device is listened to.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.settings import Settings
from fabcity.ingest.bounds import Bounds
from fabcity.ingest.deadletters import OUTCOMES, Budget, Keeper, Kept, Quota
from fabcity.ingest.origins import Known
from fabcity.ingest.service import ingest
from fabcity.ingest.topics import source_of, to_event
from fabcity.registry import entries
from services.mqtt import lanes
from services.mqtt.batching import Backlog, write_batches
from services.mqtt.client import (
    AT_LEAST_ONCE,
    CREDENTIALS_REFUSED,
    EXACTLY_ONCE,
    TWO_BYTE_INTEGER_MAX,
    Client,
    Publish,
)
from services.mqtt.watch import RegistryWatch
from workers.dispatch import Dispatcher

log = logging.getLogger(__name__)

MESSAGES = Counter("fabcity_bridge_messages_total", "MQTT messages handled", ["outcome"])
BATCH_SECONDS = Histogram("fabcity_bridge_batch_seconds", "Time to store and commit a batch")
QUEUE_DEPTH = Gauge(
    "fabcity_bridge_queue_depth", "Messages received and not yet committed (at most the window)"
)
LAST_COMMIT = Gauge("fabcity_bridge_last_commit_timestamp", "Unix time of the last commit")
# Labelled by a fixed set of outcomes only, never by topic: topics are the sender's choice.
DEAD_LETTERS = Counter(
    "fabcity_dead_letters_total",
    "Refused messages by what became of them: kept, cut (kept, payload cut short), repeat "
    "(already kept), over_{device,city,total}_quota (not kept)",
    ["outcome"],
)
DEAD_LETTER_BYTES = Counter(
    "fabcity_dead_letter_bytes_total",
    "Payload bytes of refused messages: stored, or discarded (cut off, repeated, over quota)",
    ["outcome"],
)
for _outcome in OUTCOMES:  # every series exists from the start, at 0
    DEAD_LETTERS.labels(_outcome)

# paho's reconnect backoff: from the first delay, doubling up to the longest.
RECONNECT_FIRST_DELAY_S = 1
RECONNECT_LONGEST_DELAY_S = 30
# MQTT keepalive: paho pings a connection idle this long; the broker drops one silent for
# 1.5 times it.
KEEPALIVE_S = 30
# How long `stop` waits for a writer to finish the batch it holds.
WRITER_JOIN_TIMEOUT_S = 30


# A device's `last_seen` is written at most this often by one bridge process: an UPDATE per
# device per batch would cost the ingest path more than its events, for a figure read in
# minutes.
LAST_SEEN_EVERY_S = 5.0
# Sources remembered at most (they are the sender's choice); past it the memory starts anew,
# which costs one more UPDATE per device.
HEARD_MAX_SOURCES = 100_000


# Registered cities, sites and devices are named by slugs (`schemas.api.Slug`): a source of
# anything else names no device, and its text may not even reach the database (a NUL in a
# topic fails the whole batch on PostgreSQL).
_SLUG = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DEVICE_SOURCE = re.compile(rf"(?:/{_SLUG}){{3}}")


class Heard:
    """Which devices' `last_seen` is due to be written: once per `every_s` per device (per
    process), with the newest receive time of the batch. Shared by the native writers."""

    def __init__(
        self,
        prefix: str,
        every_s: float = LAST_SEEN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prefix = prefix
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._written: dict[str, float] = {}  # source: when its last_seen was last written

    def due(self, batch: Iterable[Received]) -> dict[str, datetime]:
        """The sources of a batch whose `last_seen` is due, with their newest receive time.
        Any message counts, refused or not: the device was heard from."""
        # By topic first (a dict lookup per message), read as a source once per topic.
        by_topic: dict[str, datetime] = {}
        for m in batch:
            when = by_topic.get(m.topic)
            if when is None or when < m.received_at:
                by_topic[m.topic] = m.received_at
        newest: dict[str, datetime] = {}
        for topic, when in by_topic.items():
            source = source_of(topic, self.prefix)
            if source is None or not _DEVICE_SOURCE.fullmatch(source):
                continue
            if source not in newest or newest[source] < when:
                newest[source] = when
        now = self._clock()
        with self._lock:
            return {
                source: when
                for source, when in newest.items()
                if now - self._written.get(source, -self.every_s) >= self.every_s
            }

    def written(self, sources: Iterable[str]) -> None:
        """After the commit: a failed transaction wrote nothing, so nothing is remembered."""
        now = self._clock()
        with self._lock:
            if len(self._written) > HEARD_MAX_SOURCES:
                self._written = {}
            for source in sources:
                self._written[source] = now


def keeper_for(settings: Settings) -> Keeper:
    """What one bridge process keeps of the messages it refuses."""
    quota = Quota(
        settings.mqtt_topic_prefix,
        settings.dead_letter_period_s,
        device=Budget(settings.dead_letters_per_device, settings.dead_letter_bytes_per_device),
        city=Budget(settings.dead_letters_per_city, settings.dead_letter_bytes_per_city),
        total=Budget(settings.dead_letters_per_bridge, settings.dead_letter_bytes_per_bridge),
    )
    return Keeper(settings.dead_letter_payload_bytes, quota)


def count_dead_letters(kept: Kept) -> None:
    for outcome, n in kept.outcomes.items():
        DEAD_LETTERS.labels(outcome).inc(n)
    DEAD_LETTER_BYTES.labels("stored").inc(kept.stored_bytes)
    DEAD_LETTER_BYTES.labels("discarded").inc(kept.discarded_bytes)


class Received(NamedTuple):
    """A message as the bridge holds it until it is committed and acknowledged (a tuple: one is
    made per message on the receiving thread, where a frozen dataclass cost 1.3 us more)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: datetime
    # MQTT 5 user properties and content type: CloudEvents binary mode lives in them.
    properties: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None
    # PUBLISH's DUP flag: the broker sent it before, and it may have been committed already.
    dup: bool = False


# Writer threads of a bridge alone, unless told (`bridge_writers`): while one waits for its
# commit, the other reads and stores the next batch.
WRITERS_ALONE = 2


def _writers(settings: Settings, factory: sessionmaker[Session]) -> int:
    if settings.bridge_writers is not None:
        return settings.bridge_writers
    bind = factory.kw.get("bind")
    # SQLite (the embedded default) takes one writer at a time: a second would wait for it.
    return WRITERS_ALONE if bind is not None and bind.dialect.name == "postgresql" else 1


class Bridge:
    def __init__(
        self, settings: Settings, factory: sessionmaker[Session], dispatcher: Dispatcher
    ) -> None:
        self.settings = settings
        # Its own settings' bounds on what an event may carry, as the HTTP path does.
        self.bounds = Bounds.of(settings)
        # The sources and resources its writers resolved, kept while the registry stands still.
        self.known = Known()
        self.factory = factory
        self.dispatcher = dispatcher
        self.v5 = settings.mqtt_protocol == "5"
        # Bounded by the inflight window: Mosquitto 2.0.11 was measured sending a manual-ack
        # client ~19x its ReceiveMaximum once acks flow in batches, so the window alone does
        # not bound memory. A full queue blocks the receive thread, TCP pushes back, and the
        # backlog stays at the broker.
        self._queue: Backlog[Received] = Backlog(settings.mqtt_receive_maximum)
        self._generation = 0
        self._stop = threading.Event()
        self.connected = threading.Event()  # connected and subscribed
        self.stored = 0
        self.dead_lettered = 0  # messages refused
        self.letters_kept = 0  # of them, those stored as dead letters (the rest were counted)
        # The deepest the queue has been (tests read it).
        self.max_depth = 0
        # Several writers, each with its own transaction: while one waits on PostgreSQL (about
        # half of a writer's time, measured with py-spy) another validates its batch. Acks may
        # then go out of batch order, which MQTT allows for QoS 1.
        self._writers = [
            threading.Thread(target=self._write_loop, name=f"bridge-writer-{i}", daemon=True)
            for i in range(_writers(settings, factory))
        ]
        self._count_lock = threading.Lock()
        # One quota for the whole process: the native writers and the device lane share it.
        self.keeper = keeper_for(settings)
        self.heard = Heard(settings.mqtt_topic_prefix)
        # Device messages (adapter topics) go to a lane of their own: one writer, in arrival
        # order, because adapters keep per-device state (job starts, counters).
        self.adapters = lanes.DeviceLane(
            settings, factory, self._ack, dispatcher.nudge, self.keeper, count_dead_letters
        )
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.mqtt_client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else False,
            manual_ack=True,
        )
        if settings.mqtt_username:
            self.client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        self.client.reconnect_delay_set(
            min_delay=RECONNECT_FIRST_DELAY_S, max_delay=RECONNECT_LONGEST_DELAY_S
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish_fast = self._on_publishes
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        # The SUBSCRIBE of the current connection (set and read on the network thread).
        self._connect_mid: int | None = None
        self.watch = (
            RegistryWatch(settings, factory, dispatcher, self.topic)
            if settings.bridge_adapters
            else None
        )

    @property
    def topic(self) -> str:
        topic = f"{self.settings.mqtt_topic_prefix}/+/+/+/events"
        # Shared subscriptions are MQTT 5 (amqtt, the embedded broker, has none).
        return f"$share/{self.settings.mqtt_share_group}/{topic}" if self.v5 else topic

    @property
    def adapter_topics(self) -> list[str]:
        return list(self.watch.filters) if self.watch is not None else []

    def start(self) -> Bridge:
        self.adapters.start()
        if self.watch is not None:
            self.watch.start(self.client)
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.settings.mqtt_session_expiry_s
            # The window of unacknowledged messages must exceed a batch, or the bridge would
            # stall at the broker's default of 20 per commit.
            properties.ReceiveMaximum = min(
                TWO_BYTE_INTEGER_MAX, self.settings.mqtt_receive_maximum
            )
        self.client.connect_async(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            keepalive=KEEPALIVE_S,
            clean_start=False if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        for writer in self._writers:
            writer.start()
        self.client.loop_start()
        return self

    def stop(self) -> None:
        """Stop taking messages; what is not committed stays unacknowledged at the broker."""
        self._stop.set()
        if self.watch is not None:
            self.watch.stop()
        self.adapters.stop()
        for writer in self._writers:
            writer.join(timeout=WRITER_JOIN_TIMEOUT_S)
        self.client.disconnect()
        self.client.loop_stop()

    # paho callbacks: run on the network thread and never raise ------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        try:
            if reason.is_failure:
                log.error("MQTT connect refused: %s", reason)
                if reason.value in CREDENTIALS_REFUSED:  # retrying cannot help: stop
                    self._stop.set()
                    client.disconnect()
                return
            self._generation += 1
            topics = [self.topic, *self.adapter_topics]
            _, self._connect_mid = client.subscribe([(t, AT_LEAST_ONCE) for t in topics])
            if self.watch is not None and self._connect_mid is not None:
                self.watch.sent(self._connect_mid, topics)
        except Exception:
            log.exception("on_connect failed")

    def _on_unsubscribe(self, _c: mqtt.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        if self.watch is not None:
            self.watch.unsubscribed(mid)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        if self.watch is not None:
            self.watch.acked(mid, codes)
        if mid != self._connect_mid:
            return  # the watch's, for devices registered since
        if codes and codes[0].is_failure:
            log.error("the broker refused the subscription to %s: %s", self.topic, codes)
            return
        self.connected.set()
        log.info(
            "MQTT connected to %s:%s; subscribed to %s",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.topic,
        )

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """A message paho read (one with properties, say; see `services.mqtt.client`)."""
        try:
            received = Received(
                msg.topic,
                bytes(msg.payload),
                msg.mid,
                msg.qos,
                self._generation,
                datetime.now(UTC),
                *lanes.publish_properties(msg),
                dup=bool(msg.dup),
            )
            self._route([received])
        except Exception:
            log.exception("dropped a message on the floor (it stays unacknowledged)")

    def _on_publishes(self, run: list[Publish], received_at: datetime) -> None:
        """Plain PUBLISH packets the client read straight from its buffer, in order."""
        try:
            gen = self._generation
            self._route(
                [
                    Received(topic, payload, mid, qos, gen, received_at, (), None, dup)
                    for topic, payload, mid, qos, dup in run
                ]
            )
        except Exception:
            log.exception("dropped messages on the floor (they stay unacknowledged)")

    def _route(self, messages: list[Received]) -> None:
        """Device messages to the adapters' lane, the rest to the native writers at once."""
        native: list[Received] = []
        for m in messages:
            if self.adapters.takes(m.topic):
                self.adapters.put(m)
            else:
                native.append(m)
        if native:
            self._queue.put_many(native)

    # the writer ---------------------------------------------------------------------------

    def _take_batch(self) -> list[Received]:
        depth = self._queue.qsize()
        self.max_depth = max(self.max_depth, depth)
        QUEUE_DEPTH.set(depth)
        return self._queue.take(
            self.settings.bridge_batch_size, self.settings.bridge_batch_wait_ms / 1000
        )

    def _write_loop(self) -> None:
        write_batches(
            self._take_batch,
            self._commit,
            lambda batch, _: self._ack(batch),
            self._stop,
            "native messages",
        )

    def _commit(self, batch: list[Received]) -> None:
        prefix = self.settings.mqtt_topic_prefix
        limit = self.settings.mqtt_max_payload_bytes
        parsed = [to_event(m.topic, m.payload, prefix, m.received_at, limit) for m in batch]
        good = [(m, p.event) for m, p in zip(batch, parsed, strict=True) if p.event is not None]
        dead = [(m, p.reason or "") for m, p in zip(batch, parsed, strict=True) if p.event is None]
        heard = self.heard.due(batch)
        started = time.perf_counter()
        kept: Kept | None = None
        try:
            with transaction(self.factory) as session:
                outcome = ingest(
                    session, [e for _, e in good], bounds=self.bounds, known=self.known
                )
                dead.extend((good[r.index][0], r.error) for r in outcome.result.rejected)
                kept = self.keeper.keep(session, "mqtt", dead)
                # After the events: a status event among them has set `online` first.
                entries.mark_heard(session, heard)
        except BaseException:
            # Not stored: the batch comes again, and what it took of the quota was not used.
            if kept is not None:
                self.keeper.give_back(kept)
            raise
        self.heard.written(heard)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        LAST_COMMIT.set_to_current_time()
        with self._count_lock:
            self.stored += outcome.result.accepted
            self.dead_lettered += len(dead)
            self.letters_kept += len(kept.rows)
        MESSAGES.labels("stored").inc(outcome.result.accepted)
        MESSAGES.labels("duplicate").inc(outcome.result.duplicates)
        MESSAGES.labels("dead_letter").inc(len(dead))
        count_dead_letters(kept)
        lanes.log_dead_letters(dead, kept)
        if outcome.result.duplicates:
            # Expected after a restart (the broker redelivers what was not acknowledged).
            log.info(
                "batch of %d: stored=%d duplicates=%d",
                len(batch),
                outcome.result.accepted,
                outcome.result.duplicates,
            )
        if outcome.windows_marked:
            self.dispatcher.nudge()

    def _ack(self, batch: list[Received]) -> None:
        generation = self._generation
        # A packet id belongs to one connection: after a reconnect the broker redelivers (and
        # we store once); acking an old id could acknowledge a different message.
        current = [m for m in batch if m.generation == generation]
        self.client.ack_many(m.mid for m in current if m.qos == AT_LEAST_ONCE)
        for m in current:
            if m.qos == EXACTLY_ONCE:
                self.client.ack(m.mid, m.qos)
