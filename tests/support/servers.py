"""Brokers and databases of our own, on spare ports, for tests and benchmarks that stop,
restart or overload them: the machine's shared services are never disturbed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn in a thread on a spare loopback port: its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Server:
    """A server process on a port of its own; `stop()` and `start()` again to simulate faults."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"fabcity-{type(self).__name__.lower()}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Server:
        log = (self.dir / "server.log").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.dir)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.ask_to_stop(self.proc)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def ask_to_stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Mosquitto(Server):
    """Mosquitto with the shipped configuration (deploy/mosquitto/mosquitto.conf): the large
    queue limits that keep every QoS 1 message, on a loopback port of its own."""

    def command(self) -> list[str]:
        conf = MOSQUITTO_CONF.read_text()
        conf = re.sub(r"^listener .*$", f"listener {self.port} 127.0.0.1", conf, flags=re.M)
        conf = re.sub(
            r"^persistence_location .*$", f"persistence_location {self.dir}/", conf, flags=re.M
        )
        conf = re.sub(r"^log_dest .*$", f"log_dest file {self.dir}/mosquitto.log", conf, flags=re.M)
        # The shipped file refuses anonymous clients until broker-config adds users; a test
        # broker on loopback takes them (tests/security/test_broker.py tests the secured one).
        conf = re.sub(r"^allow_anonymous .*$", "allow_anonymous true", conf, flags=re.M)
        path = self.dir / "mosquitto.conf"
        path.write_text(conf)
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(path)]

    @property
    def host(self) -> str:
        return "127.0.0.1"


class Redis(Server):
    def command(self) -> list[str]:
        return [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.dir),
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Postgres(Server):
    """A PostgreSQL cluster of its own (`initdb` into a temporary directory), so that a fault
    test can restart a real PostgreSQL without touching the server the machine shares. The
    binaries are the machine's own (`pg_config --bindir`); as root, PostgreSQL runs as the
    `postgres` user, since it refuses to run as root."""

    def __init__(self) -> None:
        super().__init__()
        config = shutil.which("pg_config")
        if config is None:
            raise FileNotFoundError("pg_config (PostgreSQL's server package) is not installed")
        self.bin = Path(subprocess.check_output([config, "--bindir"], text=True).strip())
        self.data = self.dir / "data"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self.as_owner, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
             "-U", "postgres", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip

    def command(self) -> list[str]:
        return [
            *self.as_owner, str(self.bin / "postgres"), "-D", str(self.data),
            "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.dir}",
        ]  # fmt: skip

    def ask_to_stop(self, proc: subprocess.Popen[bytes]) -> None:
        # SIGINT is PostgreSQL's fast shutdown: clients are disconnected, the server
        # checkpoints and exits (SIGTERM would wait for every client to leave). As root the
        # process started is `runuser`, and the server is its child.
        server = psutil.Process(proc.pid)
        children = server.children()
        (children[0] if self.as_owner and children else server).send_signal(signal.SIGINT)

    def start(self) -> Postgres:
        super().start()
        # The port opens before the server takes connections ("the database system is
        # starting up").
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        ).returncode:
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not start")
            time.sleep(0.1)
        return self

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


class Database:
    """A fresh PostgreSQL database on the shared server, dropped on `close()`."""

    def __init__(self, prefix: str = "fabcity_scratch", admin_url: str = PG_ADMIN_URL) -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        # Pre-ping: a fault test restarts the server under this engine.
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = admin_url.rsplit("/", 1)[0] + "/" + self.name

    def close(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()
