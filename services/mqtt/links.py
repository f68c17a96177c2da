"""Devices the bridge goes to, instead of waiting for them on the city's broker.

- A Bambu Lab printer is its own MQTT broker (LAN mode: TLS on 8883, user `bblp`, the
  access code as password, a certificate from Bambu's own CA). One client per printer
  subscribes to `device/{serial}/report`; the session with the printer is its availability.
- A PrusaLink printer only answers HTTP: it is polled.

Both hand their messages to the same adapters and the same ingest path as the bridge, one
small transaction per batch. The bridge's registry watch (`services.mqtt.watch`) starts a link
when such a printer is registered, restarts it when its settings change and stops it when the
printer is retired or deleted. A link says since when it listens (`listening_since`: the
printer's report subscription acknowledged, or its first answer to a poll) and calls
`on_listening` then, so the watch records it at once.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters import bambu, prusalink
from fabcity.adapters.base import Device, Message
from fabcity.ingest.intake import Stored
from schemas.devices import BambuSettings, PrusaLinkSettings
from services.mqtt.batching import FIRST_ITEM_WAIT_S, take_batch, write_batches
from services.mqtt.client import AT_MOST_ONCE, CREDENTIALS_REFUSED
from services.mqtt.lanes import store_batch
from workers.dispatch import Dispatcher

log = logging.getLogger(__name__)

# Asks a Bambu printer for its full state; P1/A1 printers otherwise send only changes.
PUSHALL = {"pushing": {"sequence_id": "0", "command": "pushall", "version": 1, "push_target": 1}}

# A printer's refusal after which retrying cannot help (a wrong access code): the MQTT 5
# codes, and MQTT 3.1.1's own numbers for the same two refusals.
V311_BAD_USERNAME_OR_PASSWORD = 4
V311_NOT_AUTHORIZED = 5
REFUSED_FOR_GOOD = CREDENTIALS_REFUSED | {V311_BAD_USERNAME_OR_PASSWORD, V311_NOT_AUTHORIZED}
# paho's reconnect backoff towards a printer: from the first delay, doubling up to the longest.
RECONNECT_FIRST_DELAY_S = 1
RECONNECT_LONGEST_DELAY_S = 60
# MQTT keepalive: paho pings a connection idle this long; the printer drops one silent for
# 1.5 times it.
KEEPALIVE_S = 30
# Messages per transaction: all that is queued, up to this many.
BATCH_MESSAGES = 100
# How long `stop` waits for a link's threads.
THREAD_JOIN_TIMEOUT_S = 10
# A PrusaLink answer that takes longer counts as the printer being offline.
HTTP_TIMEOUT_S = 5
# How much of a polling error is kept in the message.
POLL_ERROR_CHARS = 500
# Random hex digits in a Bambu client id: two clients with one id would keep disconnecting
# each other.
CLIENT_ID_SUFFIX_CHARS = 6


class _Writer:
    """Stores messages in batches; a batch that fails is retried, never dropped silently."""

    def __init__(self, name: str, factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
        self.factory = factory
        self.dispatcher = dispatcher
        self.queue: queue.Queue[Message] = queue.Queue()
        self.stopping = threading.Event()
        self.stored = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=THREAD_JOIN_TIMEOUT_S)

    def _loop(self) -> None:
        # Nothing redelivers what a printer sent: what is queued when the link stops (its
        # "offline", say) is still stored.
        write_batches(
            self._take,
            lambda batch: store_batch(self.factory, batch),
            self._committed,
            self.stopping,
            "device messages",
            drain=True,
        )

    def _take(self) -> list[Message]:
        # Once stopping, an empty queue means done: no waiting for a first message.
        first_s = 0 if self.stopping.is_set() else FIRST_ITEM_WAIT_S
        return take_batch(self.queue, BATCH_MESSAGES, 0, first_s)

    def _committed(self, _batch: list[Message], outcome: Stored) -> None:
        self.stored += outcome.result.accepted
        if outcome.windows_marked:
            self.dispatcher.nudge()


def _nothing() -> None:
    pass


class BambuLink:
    """One MQTT client connected to one Bambu printer."""

    def __init__(
        self,
        device: Device,
        factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        on_listening: Callable[[], None] = _nothing,
    ) -> None:
        settings = device.settings
        assert isinstance(settings, BambuSettings) and settings.host
        self.device = device
        self.settings = settings
        self.writer = _Writer(f"bambu-{settings.serial}", factory, dispatcher)
        self.connected = threading.Event()
        # The first time the printer acknowledged the report subscription.
        self.listening_since: datetime | None = None
        self._on_listening = on_listening
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fabcity-{settings.serial}-{uuid.uuid4().hex[:CLIENT_ID_SUFFIX_CHARS]}",
            protocol=mqtt.MQTTv311,
        )
        self.client.username_pw_set(settings.username, settings.access_code)
        if settings.tls:
            context = ssl.create_default_context()
            if not settings.tls_verify:
                # The printer's certificate is signed by Bambu's CA, not a public one.
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self.client.tls_set_context(context)
        self.client.reconnect_delay_set(
            min_delay=RECONNECT_FIRST_DELAY_S, max_delay=RECONNECT_LONGEST_DELAY_S
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def start(self) -> BambuLink:
        self.writer.start()
        self.client.connect_async(
            str(self.settings.host), self.settings.port, keepalive=KEEPALIVE_S
        )
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.writer.stop()

    def _session(self, word: str) -> None:
        self.writer.queue.put(
            Message(bambu.session_topic(self.settings), word.encode(), datetime.now(UTC))
        )

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        try:
            if reason.is_failure:
                log.error("printer %s refused the connection: %s", self.settings.serial, reason)
                if reason.value in REFUSED_FOR_GOOD:
                    client.disconnect()
                return
            client.subscribe(bambu.report_topic(self.settings), qos=AT_MOST_ONCE)
            client.publish(f"device/{self.settings.serial}/request", orjson.dumps(PUSHALL))
            self._session("online")
            self.connected.set()
            log.info("connected to Bambu printer %s", self.settings.serial)
        except Exception:
            log.exception("on_connect failed")

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, _mid: int, codes: object, _p: object
    ) -> None:
        try:
            if any(code.is_failure for code in codes):  # type: ignore[attr-defined]
                log.error("printer %s refused its report topic: %s", self.settings.serial, codes)
                return
            if self.listening_since is None:
                self.listening_since = datetime.now(UTC)
                self._on_listening()
        except Exception:
            log.exception("on_subscribe failed")

    def _on_disconnect(self, *_: object) -> None:
        try:
            if self.connected.is_set():
                self.connected.clear()
                self._session("offline")
        except Exception:
            log.exception("on_disconnect failed")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self.writer.queue.put(Message(msg.topic, bytes(msg.payload), datetime.now(UTC)))
        except Exception:
            log.exception("dropped a printer report")


class PrusaLinkPoller:
    """Polls one PrusaLink printer's `/api/v1/status` and `/api/v1/job`."""

    def __init__(
        self,
        device: Device,
        factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        on_listening: Callable[[], None] = _nothing,
    ) -> None:
        settings = device.settings
        assert isinstance(settings, PrusaLinkSettings)
        self.device = device
        self.settings = settings
        # The first time the printer answered a poll.
        self.listening_since: datetime | None = None
        self._on_listening = on_listening
        self.writer = _Writer(f"prusalink-{device.id}", factory, dispatcher)
        headers = {"X-Api-Key": settings.api_key} if settings.api_key else {}
        auth = (
            httpx.DigestAuth(settings.username, settings.password or "")
            if settings.username
            else None
        )
        self.http = httpx.Client(
            base_url=settings.url.rstrip("/"), headers=headers, auth=auth, timeout=HTTP_TIMEOUT_S
        )
        self._thread = threading.Thread(
            target=self._loop, name=f"prusalink-{device.id}", daemon=True
        )

    def start(self) -> PrusaLinkPoller:
        self.writer.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.writer.stopping.set()
        self._thread.join(timeout=THREAD_JOIN_TIMEOUT_S)
        self.writer.stop()
        self.http.close()

    def poll(self) -> Message:
        """One round: both answers in one message, or the error that means offline."""
        try:
            status = self.http.get("/api/v1/status")
            status.raise_for_status()
            job = self.http.get("/api/v1/job")
            job.raise_for_status()
            body = {
                "status": status.json(),
                "job": job.json() if job.status_code != 204 and job.content else None,
            }
        except (httpx.HTTPError, ValueError) as exc:
            body = {"error": f"{type(exc).__name__}: {exc}"[:POLL_ERROR_CHARS]}
        now = datetime.now(UTC)
        if "error" not in body and self.listening_since is None:
            self.listening_since = now
            self._on_listening()
        return Message(prusalink.topic(self.settings), orjson.dumps(body), now)

    def _loop(self) -> None:
        while not self.writer.stopping.is_set():
            try:
                self.writer.queue.put(self.poll())
            except Exception:
                log.exception("polling %s failed", self.settings.url)
            self.writer.stopping.wait(self.settings.poll_interval_s)


Link = BambuLink | PrusaLinkPoller


def link_for(
    device: Device,
    factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    on_listening: Callable[[], None] = _nothing,
) -> Link | None:
    """A client for a Bambu printer with a `host`, a poller for a PrusaLink printer (not
    started); None for a device the bridge does not go to."""
    if not goes_to(device):
        return None
    if device.adapter == "bambu":
        return BambuLink(device, factory, dispatcher, on_listening)
    return PrusaLinkPoller(device, factory, dispatcher, on_listening)


def goes_to(device: Device) -> bool:
    """Whether the bridge goes to this device: a Bambu printer with a `host` (without one, it
    is bridged into the city's broker), a PrusaLink printer."""
    return device.adapter == "prusalink" or (
        device.adapter == "bambu" and bool(getattr(device.settings, "host", None))
    )
