"""Requests that cost too much: a period of centuries asked hour by hour, and CSV exports that
take every worker thread while ingest waits.

Each attack is made as an attacker with a planner key would make it, within the rate limit.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import date
from functools import partial
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.errors import Invalid
from fabcity.read import queries
from fabcity.registry import entries
from tests.conftest import free_port
from tests.services.http.support import assert_problem
from tests.support.api import city_client
from tests.support.city import CITY, SITE, event, flow, register
from tests.support.procs import Proc, wait_until

# What one request may make the API hold, and how long it may take to be refused.
REFUSAL_S = 1.0
REFUSAL_BYTES = 2_000_000


class TestWindowCount:
    """`interval=hour` over 500 years is 4.4 million windows: refused from the dates alone,
    before a single window is built (it took 13.6 s and 460 MB to refuse)."""

    @staticmethod
    def refusal(call: Any) -> tuple[Invalid, float, int]:
        """The refusal `call` raises, how long it took, and the most memory it held."""
        tracemalloc.start()
        started = time.perf_counter()
        try:
            with pytest.raises(Invalid) as refused:
                call()
            elapsed = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return refused.value, elapsed, peak

    def test_500_years_of_hours_are_refused_before_any_window_is_built(
        self, factory: sessionmaker[Session]
    ) -> None:
        register(factory)
        with transaction(factory) as s:
            refused, elapsed, peak = self.refusal(
                lambda: queries.metric_series(
                    s, CITY, ["input_kg"], date(1526, 1, 1), date(2025, 12, 31), "hour", None
                )
            )
        assert "4382928 windows" in refused.detail and "widen the interval" in refused.detail
        assert elapsed < REFUSAL_S and peak < REFUSAL_BYTES, (elapsed, peak)

    def test_every_day_there_is_asked_hour_by_hour_is_refused_at_once(
        self, factory: sessionmaker[Session]
    ) -> None:
        register(factory)
        with transaction(factory) as s:
            first, last = date(2, 1, 1), date(9998, 12, 31)  # every day a period may name
            for interval in ("hour", "day", "week"):
                series = partial(queries.metric_series, s, CITY, ["input_kg"], first, last)
                refused, elapsed, peak = self.refusal(lambda: series(interval, None))  # noqa: B023
                assert "windows asked" in refused.detail
                assert elapsed < REFUSAL_S and peak < REFUSAL_BYTES, (interval, elapsed, peak)

    def test_a_csv_export_of_every_hour_there_is_is_refused_before_it_streams(
        self, factory: sessionmaker[Session]
    ) -> None:
        # Exports stream span by span, so they may go far past the JSON cap; but 8,000 years
        # of hours (70 million rows a metric) would hold a worker thread for days.
        register(factory)
        with transaction(factory) as s:
            first, last = date(2, 1, 1), date(9998, 12, 31)  # every day a period may name
            refused, elapsed, peak = self.refusal(
                lambda: queries.chunks(s, CITY, first, last, "hour")
            )
        assert f"at most {queries.MAX_EXPORT_WINDOWS}" in refused.detail
        assert elapsed < REFUSAL_S and peak < REFUSAL_BYTES, (elapsed, peak)

    def test_through_the_api_both_answer_a_problem_before_any_body(self, db_url: str) -> None:
        with city_client(db_url) as client:
            url = f"/v1/cities/{CITY}/metrics"
            years = {"names": "input_kg", "interval": "hour", "from": "1526-01-01",
                     "to": "2025-12-31"}  # fmt: skip
            started = time.perf_counter()
            assert (
                "widen the interval" in assert_problem(client.get(url, params=years), 422)["detail"]
            )
            # Just over the export cap: refused with a problem, not cut short mid-stream.
            days = queries.MAX_EXPORT_WINDOWS + 1
            last = date.fromordinal(date(1700, 1, 1).toordinal() + days - 1)
            wide = {"names": "input_kg", "interval": "day", "format": "csv",
                    "from": "1700-01-01", "to": last.isoformat()}  # fmt: skip
            body = assert_problem(client.get(url, params=wide), 422)
            assert f"{days} windows" in body["detail"]
            assert time.perf_counter() - started < 5 * REFUSAL_S


# Exports and ingest ---------------------------------------------------------------------------

EXPORTERS = 45  # concurrent hour-interval CSV exports: within a planner key's burst of 200
SAMPLES = 12
# Ingest alone answers in tens of milliseconds here. With 45 exports streaming it waited for a
# worker thread behind them: seconds, up to the client's 30 s timeout, before exports had a
# lane of their own.
LATENCY_BOUND_S = 1.5
RESOURCES = ("filament", "wood", "metal", "plastic", "paper", "textile", "glass", "electronics")


def seed_hours(url: str, year: int) -> None:
    """A busy year: eight materials from the city and from beyond at the lab every hour, and
    the lab reporting every hour."""
    engine = make_engine(url)
    with transaction(make_sessionmaker(engine)) as s:
        city = entries.get_city(s, CITY)
        site = entries.get_site(s, city, SITE)
        days = "generate_series(:first, :last, interval '1 day') AS d"
        given = {"city": city.id, "site": site.id, "resources": list(RESOURCES),
                 "first": f"{year}-01-01", "last": f"{year}-12-31"}  # fmt: skip
        s.execute(
            text(
                "INSERT INTO rollup_flows_hour (city_id, day, hour, site_id, device_id, action,"
                " resource, ring, fate, recycled, design, state, amount, design_mass,"
                " design_mass_flows, flows)"
                " SELECT :city, d::date, h, :site, 0, 'consume', r, g, '', false, '',"
                " 'reported', 1000000, 0, 0, 1"
                f" FROM {days}, generate_series(0, 23) AS h,"
                " unnest(CAST(:resources AS text[])) AS r, unnest(ARRAY['city', 'beyond']) AS g"
            ),
            given,
        )
        s.execute(
            text(
                "INSERT INTO rollup_sites_hour (city_id, day, hour, site_id, events)"
                f" SELECT :city, d::date, h, :site, 16 FROM {days}, generate_series(0, 23) AS h"
            ),
            given,
        )
    engine.dispose()


@pytest.fixture
def api_on_postgres(pg_url: str) -> Iterator[str]:
    """`fabcity api` (role both) as its own process on PostgreSQL, with a busy year of hours."""
    engine = make_engine(pg_url)
    register(make_sessionmaker(engine))
    engine.dispose()
    seed_hours(pg_url, 2025)
    port = free_port()
    env = {"FABCITY_DATABASE_URL": pg_url, "FABCITY_AUTH": "off", "FABCITY_WORKER_MODE": "local"}
    proc = Proc(["api", "--port", str(port)], env={**os.environ, **env})
    try:
        proc.wait_for_output("Uvicorn running", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def post_event(client: httpx.Client) -> float:
    """Seconds one event takes to be accepted; infinite when the client gave up."""
    body = orjson.dumps(event([flow()]))
    started = time.perf_counter()
    try:
        response = client.post(
            "/v1/events", content=body, headers={"content-type": "application/cloudevents+json"}
        )
    except httpx.TimeoutException:
        return float("inf")
    assert response.status_code == 202, response.text
    return time.perf_counter() - started


@pytest.mark.timeout(600)
def test_ingest_keeps_its_latency_while_45_hour_exports_stream(api_on_postgres: str) -> None:
    base = api_on_postgres
    # The dearest export there is: every default metric of every material, hour by hour.
    export = {"interval": "hour", "group_by": "resource", "from": "2025-01-01",
              "to": "2025-12-31", "format": "csv"}  # fmt: skip
    asked = [0]  # exports sent and not finished
    streaming = [0]  # of those, exports whose body has begun
    lock = threading.Lock()

    def exporter() -> None:
        with lock:
            asked[0] += 1
        with httpx.Client(base_url=base, timeout=300) as reader:
            try:
                with reader.stream("GET", f"/v1/cities/{CITY}/metrics", params=export) as r:
                    assert r.status_code == 200
                    with lock:
                        streaming[0] += 1
                    for _ in r.iter_bytes():
                        pass
            except httpx.HTTPError:
                pass  # the server stops at the end of the test, exports still streaming
            finally:
                with lock:
                    asked[0] -= 1

    with httpx.Client(base_url=base, timeout=30) as client:
        alone = [post_event(client) for _ in range(SAMPLES)]
        for _ in range(EXPORTERS):
            threading.Thread(target=exporter, daemon=True).start()
        wait_until(lambda: streaming[0] > 0, timeout=120)
        during: list[float] = []
        overlapped: list[int] = []
        for _ in range(SAMPLES):
            during.append(post_event(client))
            overlapped.append(asked[0])
            time.sleep(0.2)

    print(
        f"\ningest latency, alone: median {statistics.median(alone) * 1000:.0f} ms, "
        f"max {max(alone) * 1000:.0f} ms; during {EXPORTERS} hour exports: median "
        f"{statistics.median(during) * 1000:.0f} ms, max {max(during) * 1000:.0f} ms "
        f"(exports under way: {min(overlapped)}-{max(overlapped)}, streaming: {streaming[0]})"
    )
    # Every sample was taken while all the exports were under way.
    assert min(overlapped) == EXPORTERS, overlapped
    assert max(during) < LATENCY_BOUND_S, during
