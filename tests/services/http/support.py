"""What the HTTP tests share: media types, the test city's sources, and helpers that post
events and read metrics and problems."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PROBLEM = "application/problem+json"
LAB = f"/{CITY}/{SITE}"
HUB = f"/{CITY}/{OTHER_SITE}"
PRINTER = f"/{CITY}/{SITE}/{DEVICE}"
METRICS_URL = f"/v1/cities/{CITY}/metrics"
ALL_METRICS = "input_kg,local_input_share,produced_count,waste_kg"

MakeClient = Callable[..., TestClient]
Sessions = sessionmaker[Session]


def post(client: TestClient, body: Any, content_type: str = SINGLE) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    response: Response = client.post(
        "/v1/events", content=raw, headers={"content-type": content_type}
    )
    return response


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with the given status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"] and body["detail"]
    return body


def metrics(
    client: TestClient, first: str, last: str, names: str = ALL_METRICS, **params: str
) -> dict[str, Any]:
    response = client.get(METRICS_URL, params={"names": names, "from": first, "to": last, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def series(body: dict[str, Any], name: str, key: str | None = None) -> list[dict[str, Any]]:
    [found] = [s for s in body["series"] if s["name"] == name and s["key"] == key]
    points: list[dict[str, Any]] = found["points"]
    return points
