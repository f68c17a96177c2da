"""The MQTT broker `fabcity up` runs: Mosquitto when it is installed, else amqtt in a thread.

Mosquitto (one `apt-get install mosquitto`, `brew install mosquitto`) speaks MQTT 5, so the
bridge gets shared subscriptions, manual acknowledgement windows and CloudEvents binary mode,
at the broker's full speed. It runs as a child process with a configuration written for the
run: a listener on the chosen port of the chosen interface, persistence in the data
directory, and the queue limits of `deploy/mosquitto/mosquitto.conf` that keep every QoS 1
message. amqtt, the fallback, is pure Python, speaks MQTT 3.1.1 only and is slower.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

# How long `start` waits for the broker to listen.
START_TIMEOUT_S = 15.0
# How long `stop` waits for the broker's shutdown, then for its thread.
STOP_TIMEOUT_S = 10

Choice = Literal["auto", "mosquitto", "amqtt"]
# Where packages put the binary besides PATH: Debian's /usr/sbin is not on a user's PATH.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin", "/opt/local/sbin")
# What the fallback cannot do, for the banner.
# (bench/embedded_up.py: `fabcity up` stored 2.2-3.5 times more events/s with Mosquitto.)
AMQTT_LIMITS = (
    "MQTT 3.1.1 only (MQTT 5 clients are refused), and less than half the ingest rate; "
    "install mosquitto for MQTT 5 and full speed"
)


class BrokerUnavailable(RuntimeError):
    """The broker asked for is not installed, or would not start: said without a traceback."""


class Broker(Protocol):
    name: str  # for the banner
    mqtt5: bool  # whether the bridge and devices may speak MQTT 5 to it

    def start(self, timeout: float = START_TIMEOUT_S) -> Broker: ...
    def stop(self) -> None: ...


def find_mosquitto() -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    return shutil.which("mosquitto", path=search)


def embedded_broker(host: str, port: int, data_dir: Path, choice: Choice = "auto") -> Broker:
    """The broker `choice` names; `auto` is Mosquitto when installed, else amqtt."""
    if choice == "amqtt":
        return EmbeddedBroker(host, port)
    binary = find_mosquitto()
    if binary is not None:
        return Mosquitto(binary, host, port, data_dir)
    if choice == "mosquitto":
        raise BrokerUnavailable(
            "no mosquitto binary on PATH or in " + ", ".join(SBIN_DIRS) + "; install it "
            "(apt-get install mosquitto, brew install mosquitto) or use --broker amqtt"
        )
    return EmbeddedBroker(host, port)


def mosquitto_config(host: str, port: int, data_dir: Path) -> str:
    """A Mosquitto configuration for one machine: anonymous clients (the embedded default
    has no keys), bound to `host` only, holding what it accepts."""
    state = data_dir.resolve() / "mosquitto"
    lines = [
        "# Written by `fabcity up` at each start; edits are overwritten.",
        f"listener {port} {host}",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {state}/",
        # As deploy/mosquitto/mosquitto.conf: a QoS 1 subscriber that falls behind must not
        # lose the overflow, and a crash loses at most the last 5 s (docs/scaling.md).
        "autosave_on_changes false",
        "autosave_interval 5",
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        "max_packet_size 1048576",
        "persistent_client_expiration 7d",
        f"log_dest file {state}/mosquitto.log",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # As root, Mosquitto would switch to the `mosquitto` user, which cannot write here.
        lines.append("user root")
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:
    """In the child before exec: on Linux, SIGTERM when `fabcity up` dies, however it dies,
    so no orphaned broker keeps holding the port."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Mosquitto:
    name = "Mosquitto"
    mqtt5 = True

    def __init__(self, binary: str, host: str, port: int, data_dir: Path) -> None:
        self.binary = binary
        self.host = host
        self.port = port
        self.dir = data_dir.resolve() / "mosquitto"
        self.config = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def version(self) -> str:
        """`mosquitto version 2.0.11` → `2.0.11` (empty when it cannot be told)."""
        try:
            out = subprocess.run(
                [self.binary, "-h"], capture_output=True, timeout=5, check=False
            ).stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            return ""
        first = out.splitlines()[0] if out else ""
        return first.removeprefix("mosquitto version ").strip() if "version" in first else ""

    def start(self, timeout: float = START_TIMEOUT_S) -> Mosquitto:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(mosquitto_config(self.host, self.port, self.dir.parent))
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own session: Ctrl-C goes to `fabcity up`, which stops the broker last,
            # after the bridge has let go of it.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        reach = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerUnavailable(f"mosquitto exited at start: {self._why()}")
            try:
                with socket.create_connection((reach, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not listen on port {self.port}: {self._why()}")

    def _why(self) -> str:
        err = b""
        if self._proc is not None and self._proc.poll() is not None and self._proc.stderr:
            err = self._proc.stderr.read() or b""
        logged = self.log.read_text(errors="replace") if self.log.exists() else ""
        text = (err.decode(errors="replace") + logged).strip().splitlines()
        return " | ".join(text[-3:]) or f"see {self.log}"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # Mosquitto saves its persistence file on SIGTERM
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("mosquitto did not stop in %s s; killed", STOP_TIMEOUT_S)
            proc.kill()
            proc.wait()


class EmbeddedBroker:
    """amqtt in a thread of its own: the fallback when Mosquitto is not installed."""

    name = "amqtt"
    mqtt5 = False

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mqtt-broker", daemon=True)

    def start(self, timeout: float = START_TIMEOUT_S) -> EmbeddedBroker:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the embedded MQTT broker did not start")
        if self._error is not None:
            raise RuntimeError(f"the embedded MQTT broker failed: {self._error}")
        return self

    def _run(self) -> None:
        # lazy: amqtt is imported only when it is the broker that runs
        from amqtt.broker import Broker as Amqtt

        asyncio.set_event_loop(self._loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

        async def boot() -> None:
            self._broker = Amqtt(config)
            await self._broker.start()

        try:
            self._loop.run_until_complete(boot())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(timeout=STOP_TIMEOUT_S)
        except Exception:
            log.warning("embedded broker did not shut down cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=STOP_TIMEOUT_S)
