"""The bridge follows the registry while it runs: a device registered, changed, retired or
deleted is taken up within a second, and the registry says since when each device is heard.

Every `mqtt_adapter_refresh_s` (half a second) the watch reads one number,
`registry_version`, which the database's own triggers raise at every write that changes what
the bridge listens to (migration 0014), whichever process made it: the API beside the bridge
in `fabcity up`, or another process against PostgreSQL. One primary-key read, whatever the
registry's size; the registry itself is read only when that number moved, and then once for
all the changes since the last look. That bounds what a flood of registry changes costs the
bridge: one read of the registry per tick at most, and a SUBSCRIBE only for filters it did not
have. A filter the broker refuses is not asked for again until the next connection, so a
refused topic cannot make the bridge resubscribe in a loop.

On each read it subscribes the topics of new devices (then unsubscribes those no longer
wanted, in that order, so a topic moving under a wider filter is never unheard), starts a
printer link (`services.mqtt.links`) for a new Bambu or PrusaLink printer, restarts one whose
settings changed and stops one whose printer left. Then it writes `devices.listening_since`:

- a device on the native topics: since the native subscription was acknowledged, or since the
  watch saw the device, whichever came later;
- a device on its own topics: since every one of its filters (or a wider one that covers it)
  was acknowledged by the broker, or since the watch saw the device as it is now;
- a printer the bridge goes to: since its link first heard the printer (the report topic
  acknowledged by a Bambu printer; a PrusaLink printer's first answer to a poll).

Null while none of these holds, and for every device once the bridge stops (a bridge that
died leaves its times behind: the next one clears them as it starts). A broker
connection lost does not clear it: the bridge's session keeps the subscriptions and the
broker keeps the messages for it. Only the bridge that reads the device topics
(`bridge_adapters`, one per group) runs a watch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters.base import Device
from fabcity.adapters.routing import covers, device_filters, minimal_filters, subscriptions
from fabcity.core.db import transaction
from fabcity.core.settings import Settings
from fabcity.registry import entries
from services.mqtt.client import AT_LEAST_ONCE
from services.mqtt.links import Link, goes_to, link_for
from workers.dispatch import Dispatcher

log = logging.getLogger(__name__)

RELOADS = Counter("fabcity_bridge_registry_reads_total", "Times the bridge read the registry again")

# Filters per SUBSCRIBE or UNSUBSCRIBE packet: a registry of thousands of devices must not
# make one packet past a broker's packet size limit.
FILTERS_PER_PACKET = 100


@dataclass(frozen=True)
class _Sent:
    """A SUBSCRIBE sent from the network thread (at connect): its packet id and filters."""

    mid: int
    filters: tuple[str, ...]


@dataclass(frozen=True)
class _Acked:
    mid: int
    refused: tuple[bool, ...]  # per filter, in the order sent
    at: datetime


@dataclass(frozen=True)
class _Unsubacked:
    mid: int


_WAKE = object()  # a link heard its printer


@dataclass
class _Running:
    key: str  # the settings it was started with
    link: Link | None  # None: it could not be started (not again until the settings change)


class RegistryWatch:
    """Keeps the bridge's subscriptions and printer links to the registry, and records since
    when each device is listened to."""

    def __init__(
        self,
        settings: Settings,
        factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        native_topic: str,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.dispatcher = dispatcher
        self.native_topic = native_topic
        self.every_s = settings.mqtt_adapter_refresh_s
        self.client: mqtt.Client | None = None
        # The adapter filters wanted now (read by the network thread at every connect).
        self.filters: tuple[str, ...] = ()
        # Filters no longer wanted whose UNSUBSCRIBE the broker has not acknowledged yet: until
        # it does, a message on them may still come. Replaced whole, never changed in place.
        self.leaving: frozenset[str] = frozenset()
        self.reads = 0  # registry reads (tests read it)
        self.subscribed = 0  # filters asked for in SUBSCRIBEs sent by the watch
        self.links_started = 0
        # Owned by the watch's thread alone: the network thread only puts on `_events`.
        self._events: queue.Queue[object] = queue.Queue()
        self._pending: dict[int, tuple[str, ...]] = {}
        self._active: dict[str, datetime] = {}  # filter: when the broker acknowledged it
        self._refused: set[str] = set()
        self._unsubscribe: set[str] = set()  # no longer wanted, not yet unsubscribed
        self._unsubscribing: dict[int, tuple[str, ...]] = {}  # UNSUBSCRIBEs sent, not acked
        self._version: int | None = None
        self._listened = entries.Listened([], [])
        self._noticed: dict[int, tuple[str, datetime]] = {}  # device: (its settings, seen at)
        self._links: dict[int, _Running] = {}
        self._written: dict[int, datetime | None] = {}
        self._unrecorded = False  # the last write failed: try again at the next tick
        self._next_look = 0.0  # monotonic time of the next look at the version
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bridge-registry", daemon=True)

    # life --------------------------------------------------------------------------------

    def start(self, client: mqtt.Client) -> None:
        """Read the registry before the bridge connects, so that its first SUBSCRIBE has every
        topic, and follow it from then on."""
        self.client = client
        try:
            with transaction(self.factory) as session:
                entries.forget_listening(session)  # what a bridge that died left behind
        except Exception:
            log.exception("could not clear the devices' listening times")
        self._reload()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._events.put(_WAKE)
        if self._thread.is_alive():
            self._thread.join(timeout=self.every_s * 4 + 10)
        stoppers = [self._stop_link(r.link) for r in self._links.values()]
        for thread in stoppers:
            thread.join()
        self._links = {}
        try:
            with transaction(self.factory) as session:
                entries.forget_listening(session)
        except Exception:
            log.exception("could not clear the devices' listening times")

    # from the network thread (never raise, never block) ---------------------------------

    def sent(self, mid: int, filters: Sequence[str]) -> None:
        self._events.put(_Sent(mid, tuple(filters)))

    def acked(self, mid: int, codes: Sequence[object]) -> None:
        refused = tuple(bool(getattr(c, "is_failure", False)) for c in codes)
        self._events.put(_Acked(mid, refused, datetime.now(UTC)))

    def unsubscribed(self, mid: int) -> None:
        self._events.put(_Unsubacked(mid))

    # the watch's thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("following the registry failed; trying again")
                self._stop.wait(self.every_s)

    def _tick(self) -> None:
        # Acknowledgements and a link's news are handled as they come; the version is looked
        # at no more often than every `every_s`, however many acknowledgements wake the watch
        # (or a flood would make it read, subscribe and read again as fast as the broker acks).
        wait_s = self._next_look - time.monotonic()
        try:
            event = self._events.get(timeout=wait_s) if wait_s > 0 else self._events.get_nowait()
        except queue.Empty:
            event = None
        changed = False
        while event is not None:
            changed |= self._handle(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                event = None
        if self._stop.is_set():
            return
        if time.monotonic() < self._next_look:
            if changed or self._unrecorded:
                self._record()
            return
        self._next_look = time.monotonic() + self.every_s
        if self._registry_moved():
            self._reload()
            changed = True
        elif self._unsubscribe and self._connected():
            self._send_unsubscribe()
        if changed or self._unrecorded:
            self._record()

    def _handle(self, event: object) -> bool:
        if isinstance(event, _Sent):
            # A new connection: what the broker refused before is asked for again. (What the
            # last connection left unanswered stays in `_pending` until its packet id comes
            # round again: a SUBSCRIBE the watch sent on the new connection may be in there.)
            self._pending[event.mid] = event.filters
            self._refused.clear()
            # The broker keeps a session's subscriptions across connections: an UNSUBSCRIBE the
            # last one left unacknowledged may never have reached it, so it is sent again.
            for gone in self._unsubscribing.values():
                self._unsubscribe.update(f for f in gone if f not in self.filters)
            self._unsubscribing.clear()
            self._leave()
            return False
        if isinstance(event, _Unsubacked):
            if self._unsubscribing.pop(event.mid, None) is not None:
                self._leave()
            return False
        if isinstance(event, _Acked):
            filters = self._pending.pop(event.mid, None)
            if filters is None:
                return False  # an UNSUBACK, or a SUBSCRIBE not the watch's
            for topic_filter, refused in zip(filters, event.refused, strict=False):
                if refused:
                    if topic_filter not in self._refused:
                        log.error("the broker refused the subscription to %s", topic_filter)
                    self._refused.add(topic_filter)
                    self._active.pop(topic_filter, None)
                else:
                    self._active.setdefault(topic_filter, event.at)
            return True
        return True  # a link heard its printer

    def _registry_moved(self) -> bool:
        try:
            with transaction(self.factory) as session:
                version = entries.registry_version(session)
        except Exception:
            log.exception("could not read the registry version")
            return False
        if version == self._version:
            return False
        self._version = version
        return True

    def _reload(self) -> None:
        """Read the registry once and bring subscriptions and links to it."""
        try:
            with transaction(self.factory) as session:
                version = entries.registry_version(session)
                listened = entries.listened_devices(session)
        except Exception:
            log.exception("could not read the registered devices; keeping what I have")
            self._version = None  # look again at the next tick
            return
        self._version = version
        self.reads += 1
        RELOADS.inc()
        now = datetime.now(UTC)
        noticed: dict[int, tuple[str, datetime]] = {}
        for device in listened.adapters:
            key = device.settings.model_dump_json()
            before = self._noticed.get(device.id)
            noticed[device.id] = before if before and before[0] == key else (key, now)
        for device_id in listened.native:
            noticed[device_id] = self._noticed.get(device_id) or ("", now)
        self._noticed = noticed
        self._listened = listened
        wanted = minimal_filters(
            [*self.settings.mqtt_adapter_topics, *subscriptions(listened.adapters)]
        )
        new = [f for f in wanted if f not in self.filters]
        gone = [f for f in self.filters if f not in wanted]
        self._unsubscribe.update(gone)
        self._unsubscribe.difference_update(wanted)
        self._leave()  # before `filters`: a filter is always in one or the other until acked
        self.filters = tuple(wanted)
        if self._connected():
            self._send_subscribe(new)  # first: a topic moving under a wider filter stays heard
            self._send_unsubscribe()
        # Else the next connection subscribes to `filters`; `_unsubscribe` waits for it.
        self._follow_links(listened.adapters)

    def _connected(self) -> bool:
        return self.client is not None and self.client.is_connected()

    def _send_subscribe(self, filters: list[str]) -> None:
        assert self.client is not None
        for i in range(0, len(filters), FILTERS_PER_PACKET):
            chunk = tuple(filters[i : i + FILTERS_PER_PACKET])
            rc, mid = self.client.subscribe([(f, AT_LEAST_ONCE) for f in chunk])
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._pending[mid] = chunk
                self.subscribed += len(chunk)
        if filters:
            log.info("subscribed to the topics of %d changed devices' filters", len(filters))

    def _send_unsubscribe(self) -> None:
        assert self.client is not None
        gone = sorted(self._unsubscribe)
        for i in range(0, len(gone), FILTERS_PER_PACKET):
            chunk = gone[i : i + FILTERS_PER_PACKET]
            rc, mid = self.client.unsubscribe(chunk)
            if rc == mqtt.MQTT_ERR_SUCCESS:
                self._unsubscribe.difference_update(chunk)
                if mid is not None:
                    self._unsubscribing[mid] = tuple(chunk)
                for topic_filter in chunk:
                    self._active.pop(topic_filter, None)
        self._leave()

    def _leave(self) -> None:
        self.leaving = frozenset(self._unsubscribe).union(*self._unsubscribing.values())

    # printer links -----------------------------------------------------------------------

    def _follow_links(self, devices: list[Device]) -> None:
        wanted: dict[int, Device] = {}
        for device in devices:
            if goes_to(device):
                wanted[device.id] = device
        for device_id in [i for i in self._links if i not in wanted]:
            self._stop_link(self._links.pop(device_id).link)
        for device_id, device in wanted.items():
            key = device.settings.model_dump_json()
            running = self._links.get(device_id)
            if running is not None and running.key == key:
                continue
            if running is not None:
                self._stop_link(running.link)
            link: Link | None = None
            try:
                link = link_for(device, self.factory, self.dispatcher, self._heard_printer)
                if link is not None:
                    link.start()
                    self.links_started += 1
                    log.info("listening to printer %s (%s)", device.source, device.adapter)
            except Exception:
                # Not again until its settings change: a bad address must not be retried in
                # a loop at every registry change.
                log.exception("could not start the link to %s", device.source)
                link = None
            self._links[device_id] = _Running(key, link)

    def _heard_printer(self) -> None:
        self._events.put(_WAKE)

    @staticmethod
    def _stop_link(link: Link | None) -> threading.Thread:
        """A link stops in a thread of its own: a poll under way may take its HTTP timeout,
        and the watch must go on meanwhile. What it still holds is stored (its writer drains)."""
        thread = threading.Thread(target=link.stop if link else _nothing, name="link-stop")
        thread.daemon = True
        thread.start()
        return thread

    # what the API answers ----------------------------------------------------------------

    def listening(self) -> dict[int, datetime | None]:
        """Since when each device is listened to, as things stand."""
        out: dict[int, datetime | None] = {}
        native = self._active.get(self.native_topic)
        for device_id in self._listened.native:
            out[device_id] = _later(native, self._noticed[device_id][1])
        for device in self._listened.adapters:
            seen = self._noticed[device.id][1]
            running = self._links.get(device.id)
            if running is not None:
                since = running.link.listening_since if running.link else None
                out[device.id] = _later(since, seen)
                continue
            out[device.id] = _later(self._filters_since(device_filters(device)), seen)
        return out

    def _filters_since(self, filters: list[str]) -> datetime | None:
        """When the last of these filters came to be covered by an acknowledged one."""
        latest: datetime | None = None
        for topic_filter in filters:
            since = self._active.get(topic_filter)
            if since is None:
                covering = [at for f, at in self._active.items() if covers(f, topic_filter)]
                if not covering:
                    return None
                since = min(covering)
            latest = since if latest is None else max(latest, since)
        return latest

    def _record(self) -> None:
        now = self.listening()
        changes: dict[int, datetime | None] = {
            device_id: since
            for device_id, since in now.items()
            if self._written.get(device_id) != since
        }
        for device_id in self._written:
            if device_id not in now:
                changes[device_id] = None  # retired or deleted
        if not changes:
            return
        try:
            with transaction(self.factory) as session:
                entries.mark_listening(session, changes)
        except Exception:
            log.exception("could not record since when devices are listened to")
            self._unrecorded = True
            return
        self._unrecorded = False
        self._written = now


def _nothing() -> None:
    pass


def _later(a: datetime | None, b: datetime) -> datetime | None:
    return None if a is None else max(a, b)
