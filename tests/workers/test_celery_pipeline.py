"""HTTP batch ▶ PostgreSQL ▶ a real Celery worker on Redis ▶ the metrics endpoint."""

from __future__ import annotations

import orjson
from fastapi.testclient import TestClient

from fabcity.core.db import make_engine, make_sessionmaker
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.city import CITY, SITE, event, flow, register
from tests.support.procs import Proc, wait_until


def test_a_posted_batch_becomes_metrics_through_celery(pg_url: str, redis_url: str) -> None:
    settings = settings_for(pg_url, worker_mode="celery", redis_url=redis_url)
    engine = make_engine(pg_url)
    register(make_sessionmaker(engine))
    worker = Proc(
        ["worker", "--concurrency", "1"],
        {
            "FABCITY_DATABASE_URL": pg_url,
            "FABCITY_REDIS_URL": redis_url,
            "FABCITY_REDIS_PREFIX": settings.redis_prefix,
        },
    )
    try:
        worker.wait_for_output("ready", timeout=60)
        client = TestClient(create_app(settings, "both"))
        batch = [
            event([flow(quantity=3, ring="city"), flow(quantity=1, ring="beyond")]),
            event(flow("produce", "part", 4, "count"), source=f"/{CITY}/{SITE}"),
            event(flow("discard", "wood", 500, "g", fate="compost")),
        ]
        response = client.post(
            "/v1/events",
            content=orjson.dumps(batch),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}

        def point(name: str) -> dict[str, object]:
            body = client.get(
                f"/v1/cities/{CITY}/metrics",
                params={"names": name, "from": "2026-03-10", "to": "2026-03-10"},
            ).json()
            result: dict[str, object] = body["series"][0]["points"][0]
            return result

        # No recompute runs in this process: only the Celery worker can fill the rollups.
        wait_until(lambda: point("input_kg")["value"] is not None, timeout=30)
        assert point("input_kg")["value"] == 4.0
        assert point("local_input_share")["value"] == 0.75
        assert point("produced_count")["value"] == 4.0
        assert point("waste_kg")["value"] == 0.5
        assert point("input_kg")["state"] == "reported"
        assert "fabcity.recompute_dirty_windows" in worker.output
    finally:
        worker.stop()
        engine.dispose()
