"""Devices the bridge goes to, instead of waiting for them on the city's broker.

- A Bambu Lab printer is its own MQTT broker (LAN mode: TLS on 8883, user `bblp`, the
  access code as password, a certificate from Bambu's own CA). One client per printer
  subscribes to `device/{serial}/report`; the session with the printer is its availability.
- A PrusaLink printer only answers HTTP: it is polled.

Both hand their messages to the same adapters and the same ingest path as the bridge, one
small transaction per batch.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters import bambu, prusalink
from fabcity.adapters.base import Device, Message
from fabcity.core.db import transaction
from fabcity.ingest.intake import store
from fabcity.registry import entries
from schemas.devices import BambuSettings, PrusaLinkSettings
from workers.dispatch import Dispatcher

log = logging.getLogger(__name__)

# Asks a Bambu printer for its full state; P1/A1 printers otherwise send only changes.
PUSHALL = {"pushing": {"sequence_id": "0", "command": "pushall", "version": 1, "push_target": 1}}


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
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        delay = 0.5
        while not self.stopping.is_set() or not self.queue.empty():
            try:
                batch = [self.queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < 100:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            while True:
                try:
                    with transaction(self.factory) as session:
                        outcome = store(session, batch)
                    break
                except Exception:
                    log.exception("storing %d device messages failed; retrying", len(batch))
                    if self.stopping.wait(delay):
                        return
                    delay = min(delay * 2, 30)
            delay = 0.5
            self.stored += outcome.result.accepted
            if outcome.windows_marked:
                self.dispatcher.nudge()


class BambuLink:
    """One MQTT client connected to one Bambu printer."""

    def __init__(
        self, device: Device, factory: sessionmaker[Session], dispatcher: Dispatcher
    ) -> None:
        settings = device.settings
        assert isinstance(settings, BambuSettings) and settings.host
        self.device = device
        self.settings = settings
        self.writer = _Writer(f"bambu-{settings.serial}", factory, dispatcher)
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fabcity-{settings.serial}-{uuid.uuid4().hex[:6]}",
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
        self.client.reconnect_delay_set(min_delay=1, max_delay=60)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> BambuLink:
        self.writer.start()
        self.client.connect_async(str(self.settings.host), self.settings.port, keepalive=30)
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
                if reason.value in (134, 135, 4, 5):  # bad access code: stop retrying
                    client.disconnect()
                return
            client.subscribe(bambu.report_topic(self.settings), qos=0)
            client.publish(f"device/{self.settings.serial}/request", orjson.dumps(PUSHALL))
            self._session("online")
            self.connected.set()
            log.info("connected to Bambu printer %s", self.settings.serial)
        except Exception:
            log.exception("on_connect failed")

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
        self, device: Device, factory: sessionmaker[Session], dispatcher: Dispatcher
    ) -> None:
        settings = device.settings
        assert isinstance(settings, PrusaLinkSettings)
        self.settings = settings
        self.writer = _Writer(f"prusalink-{device.id}", factory, dispatcher)
        headers = {"X-Api-Key": settings.api_key} if settings.api_key else {}
        auth = (
            httpx.DigestAuth(settings.username, settings.password or "")
            if settings.username
            else None
        )
        self.http = httpx.Client(
            base_url=settings.url.rstrip("/"), headers=headers, auth=auth, timeout=5
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
        self._thread.join(timeout=10)
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
            body = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        return Message(prusalink.topic(self.settings), orjson.dumps(body), datetime.now(UTC))

    def _loop(self) -> None:
        while not self.writer.stopping.is_set():
            try:
                self.writer.queue.put(self.poll())
            except Exception:
                log.exception("polling %s failed", self.settings.url)
            self.writer.stopping.wait(self.settings.poll_interval_s)


Link = BambuLink | PrusaLinkPoller


def start_links(factory: sessionmaker[Session], dispatcher: Dispatcher) -> list[Link]:
    """A client for every registered Bambu printer with a `host`, a poller for every
    PrusaLink printer."""
    with transaction(factory) as session:
        devices = entries.adapter_devices(session)
    links: list[Link] = []
    for device in devices:
        if device.adapter == "bambu" and getattr(device.settings, "host", None):
            links.append(BambuLink(device, factory, dispatcher).start())
        elif device.adapter == "prusalink":
            links.append(PrusaLinkPoller(device, factory, dispatcher).start())
    if links:
        log.info("started %d printer links (Bambu clients, PrusaLink pollers)", len(links))
    return links
