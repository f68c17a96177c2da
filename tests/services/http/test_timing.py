"""services.http.timing: one line per ingest request when asked for, nothing otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from services.http import timing
from services.http.app import create_app
from tests.conftest import settings_for
from tests.services.http.support import BATCH, post
from tests.support.city import event, flow
from workers.dispatch import NoDispatch


def batch(n: int, tag: str) -> list[dict[str, object]]:
    return [event(flow("consume", "filament", 1, "kg", "city"), id=f"{tag}-{i}") for i in range(n)]


@pytest.fixture
def timed(
    sqlite_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[TestClient, Path]]:
    monkeypatch.setenv(timing.ENV, str(tmp_path / "t"))
    app = create_app(settings_for(sqlite_url), "both", factory=sessions, dispatcher=NoDispatch())
    with TestClient(app) as client:
        yield client, tmp_path


def lines(where: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for p in where.glob("t.*.jsonl") for line in p.read_bytes().split()]


def test_a_timed_request_is_one_line_with_its_points_in_order(
    timed: tuple[TestClient, Path],
) -> None:
    client, where = timed
    assert post(client, batch(3, "timed"), BATCH).status_code == 202
    client.get("/healthz")  # not an ingest request: no line

    (line,) = lines(where)
    points = [line[p] for p in ("arrive", "body", "start", "parsed", "stored", "sent")]
    assert points == sorted(points)
    assert line["status"] == 202
    assert isinstance(line["commit"], float) and 0 <= line["commit"] <= line["stored"]
    assert line["stored_cpu"] >= line["parsed_cpu"]
    before, after = line["before"], line["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert after["cpu"] >= before["cpu"]


def test_reconnect_always_ends_the_connection(
    sqlite_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(timing.ENV, str(tmp_path / "t"))
    monkeypatch.setenv(timing.RECONNECT_ENV, "always")
    app = create_app(settings_for(sqlite_url), "both", factory=sessions, dispatcher=NoDispatch())
    with TestClient(app) as client:
        response = post(client, batch(1, "close"), BATCH)
        assert response.headers["connection"] == "close"
        assert "connection" not in client.get("/healthz").headers


def test_untimed_requests_are_not_wrapped(
    sqlite_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(timing.ENV, raising=False)
    app = create_app(settings_for(sqlite_url), "both", factory=sessions, dispatcher=NoDispatch())
    assert not any(m.cls is timing.Timing for m in app.user_middleware)
    assert timing.marks({"type": "http", "state": {}}) is timing._noop
