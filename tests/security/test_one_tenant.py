"""One tenant hurting all: one site key posting sums past what a rollup column holds.

Amounts are 64-bit millionths of a canonical unit. Ten events of a thousand flows of 1e9 kg
sum to 1e13 kg, past the 9.2e12 a rollup row holds: the recompute that adds them failed, and
since it recomputed every city in one transaction, every city's metrics stopped. Ingest now
refuses such events (by index, with the reason), and the recompute isolates a failing city.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import REGISTRY
from sqlalchemy import delete, func, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.core.models import City, DeadLetter, DirtyWindow, Event, Flow, PendingRollup
from fabcity.ingest.bounds import Bounds
from fabcity.ingest.service import ingest
from fabcity.read import queries
from fabcity.registry import entries
from fabcity.rollups import windows
from schemas import api
from services.mqtt.bridge import Bridge
from tests.conftest import settings_for
from tests.support.api import CityClient, city_client
from tests.support.city import CITY, DEVICE, SITE, count_rows, event, flow, register
from tests.support.procs import wait_until
from workers import jobs
from workers.dispatch import NoDispatch

OTHER_CITY = "othertown"
BATCH = "application/cloudevents-batch+json"
DAY = "2026-03-10"


def huge_events(source: str = f"/{CITY}/{SITE}", count: int = 10) -> list[dict[str, Any]]:
    """The attack: `count` events of 1,000 flows of 1e9 kg each, in one hour."""
    return [
        event([flow(quantity=1e9)] * 1000, id=f"huge-{i}", source=source, time=f"{DAY}T10:00:00Z")
        for i in range(count)
    ]


def register_other(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as s:
        city = entries.create_city(
            s, api.CityIn(slug=OTHER_CITY, name="Othertown", country="FR", timezone="UTC")
        )
        entries.create_site(s, city, api.SiteIn(slug=SITE, name="Lab"))


def input_kg(factory: sessionmaker[Session], city: str) -> float | None:
    with transaction(factory) as s:
        series = queries.metric_series(
            s, city, ["input_kg"], date(2026, 3, 10), date(2026, 3, 10), "day", None
        )
    return series.series[0].points[-1].value


def failures(city: str) -> float:
    value = REGISTRY.get_sample_value("fabcity_worker_recompute_failures_total", {"city": city})
    return value or 0.0


class TestIngestBounds:
    def test_the_attack_over_http_is_refused_naming_each_event(self, db_url: str) -> None:
        with city_client(db_url) as client:
            response = client.post(
                "/v1/events",
                content=orjson.dumps(huge_events()),
                headers={"content-type": BATCH},
            )
            assert response.status_code == 422, response.text
            body = response.json()
            assert body["status"] == 422
            assert [r["index"] for r in body["rejected"]] == list(range(10))
            assert all("more than one flow may carry" in r["error"] for r in body["rejected"])
            assert "[0] data[0]: 1e+09 filament" in body["detail"]
            assert count_rows(client.factory, Event) == 0
            assert count_rows(client.factory, Flow) == 0

    def test_an_event_whose_flows_together_are_too_much_is_refused(
        self, factory: sessionmaker[Session]
    ) -> None:
        # Each flow within the bound (1e6), a thousand of them together 1e9: past an event's.
        register(factory)
        batch = [
            event([flow(quantity=1e6)] * 1000, id="heavy"),
            event([flow(quantity=2e6, unit="g")], id="fine"),  # 2,000 kg after conversion
        ]
        with transaction(factory) as s:
            outcome = ingest(s, batch)
        assert outcome.result.accepted == 1
        [refused] = outcome.result.rejected
        assert refused.index == 0
        assert "the event's flows carry 1e+09" in refused.error

    def test_a_flow_too_large_after_conversion_is_refused(
        self, factory: sessionmaker[Session]
    ) -> None:
        # 2,000 t is within the schema's bound on a number, but 2e6 kg once converted.
        register(factory)
        with transaction(factory) as s:
            outcome = ingest(s, [event([flow(quantity=2000, unit="t")])])
        [refused] = outcome.result.rejected
        assert "data: 2e+06 filament" in refused.error and "at most 1e+06" in refused.error

    def test_a_flow_derived_from_a_machine_job_is_bounded_too(
        self, factory: sessionmaker[Session]
    ) -> None:
        # A device need not send flows: a job's mass becomes one. 1e9 kg passes the schema.
        register(factory)
        job = {
            "status": "completed",
            "started": f"{DAY}T09:00:00Z",
            "ended": f"{DAY}T10:00:00Z",
            "material": "PLA",
            "mass_kg": 1e9,
        }
        body = event(job, type="fabcity.machine.job", source=f"/{CITY}/{SITE}/{DEVICE}")
        with transaction(factory) as s:
            outcome = ingest(s, [body])
        [refused] = outcome.result.rejected
        assert "derived: 1e+09 filament" in refused.error
        assert count_rows(factory, Event) == 0

    def test_a_batch_past_its_bound_refuses_the_events_past_it(
        self, factory: sessionmaker[Session]
    ) -> None:
        register(factory)
        register_other(factory)
        bounds = Bounds(flow=10 * 10**6, event=10 * 10**6, batch=25 * 10**6, window=10**15)
        batch = [event([flow(quantity=10)], id=f"e{i}") for i in range(4)]
        # Another city's events in the same batch (a bridge's commit) have their own share.
        batch.append(event([flow(quantity=10)], id="x", source=f"/{OTHER_CITY}/{SITE}"))
        with transaction(factory) as s:
            outcome = ingest(s, batch, bounds=bounds)
        assert outcome.result.accepted == 3
        assert [r.index for r in outcome.result.rejected] == [2, 3]
        assert "more than one batch may" in outcome.result.rejected[0].error

    def test_a_city_hour_past_its_bound_refuses_what_would_overfill_it(
        self, factory: sessionmaker[Session]
    ) -> None:
        register(factory)
        register_other(factory)
        bounds = Bounds(flow=10**12, event=10**12, batch=10**13, window=100 * 10**6)
        here = f"/{CITY}/{SITE}"
        there = f"/{OTHER_CITY}/{SITE}"
        with transaction(factory) as s:
            first = ingest(s, [event([flow(quantity=80)], id="a", source=here)], bounds=bounds)
        assert first.result.accepted == 1
        with transaction(factory) as s:
            second = ingest(
                s,
                [
                    event([flow(quantity=30)], id="b", source=here),  # 110 in that hour
                    event([flow(quantity=15)], id="c", source=here),  # 95: still fits
                    event([flow(quantity=30)], id="d", source=there),  # another city's hour
                    event([flow(quantity=30)], id="e", source=here, time=f"{DAY}T15:00:00Z"),
                ],
                bounds=bounds,
            )
        assert second.result.accepted == 3
        [refused] = second.result.rejected
        assert refused.index == 0
        assert "would hold more than 100" in refused.error

    def test_an_ordinary_batch_does_not_read_the_hour_back(
        self, factory: sessionmaker[Session]
    ) -> None:
        # The bound on an hour must not slow the common path: a batch that brings little to
        # any hour is not checked against what the hour holds.
        register(factory)
        sums: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "sum(flows.amount)" in statement.lower():
                sums.append(statement)

        engine = factory.kw["bind"]
        sa_event.listen(engine, "before_cursor_execute", seen)
        try:
            small = [event([flow(quantity=0.25)] * 3, id=f"s{i}") for i in range(1000)]
            with transaction(factory) as s:
                assert ingest(s, small).result.accepted == 1000
            assert sums == []
            large = [event([flow(quantity=5000)] * 3, id="large")]
            with transaction(factory) as s:
                assert ingest(s, large).result.accepted == 1
            assert len(sums) == 1
        finally:
            sa_event.remove(engine, "before_cursor_execute", seen)


def test_the_attack_over_mqtt_is_dead_lettered_with_its_reason(
    pg_url: str, pg_factory: sessionmaker[Session], mosquitto: tuple[str, int]
) -> None:
    settings = settings_for(pg_url)
    bridge = Bridge(settings, pg_factory, NoDispatch()).start()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    topic = f"{settings.mqtt_topic_prefix}/{CITY}/{SITE}/{DEVICE}/events"
    try:
        wait_until(bridge.connected.is_set, 10)
        for body in huge_events(f"/{CITY}/{SITE}/{DEVICE}"):
            client.publish(topic, json.dumps(body).encode(), qos=1).wait_for_publish(10)
        wait_until(lambda: count_rows(pg_factory, DeadLetter) == 10, 30)
    finally:
        bridge.stop()
        client.loop_stop()
    with transaction(pg_factory) as s:
        reasons = list(s.scalars(select(DeadLetter.reason)))
    assert all("more than one flow may carry" in r for r in reasons), reasons
    assert count_rows(pg_factory, Event) == 0


class TestRecomputeIsolation:
    def test_a_city_failing_its_recompute_does_not_stop_another(
        self, db_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        with city_client(db_url) as client:  # the test city registered, no worker running
            self.attack(client, caplog)

    def attack(self, client: CityClient, caplog: pytest.LogCaptureFixture) -> None:
        factory = client.factory
        register_other(factory)
        # The old hole, written past the bounds: flows whose hour sums past a 64-bit column.
        unbounded = Bounds(flow=10**18, event=10**18, batch=10**20, window=10**30)
        with transaction(factory) as s:
            testville = s.scalar(select(City.id).where(City.slug == CITY))
            assert testville is not None
            assert ingest(s, huge_events(), bounds=unbounded).result.accepted == 10
            # 10:00Z is 11:00 in Madrid; a rebuild of that hour fails as the additions do.
            windows.mark_dirty(s, {(testville, date(2026, 3, 10), 11)})
        with transaction(factory) as s:
            other = event(
                [flow(quantity=2.5)], source=f"/{OTHER_CITY}/{SITE}", time=f"{DAY}T10:00:00Z"
            )
            assert ingest(s, [other]).result.accepted == 1

        now = [0.0]
        backoff = jobs.Backoff(first=10, most=100, clock=lambda: now[0])
        before = failures(CITY)
        with caplog.at_level(logging.ERROR, logger="workers.jobs"):
            jobs.recompute_dirty_windows(factory, 100, backoff)

        assert input_kg(factory, OTHER_CITY) == pytest.approx(2.5)
        # The failing city stays pending, for a try once its data is mended.
        assert count_rows(factory, PendingRollup, PendingRollup.city_id == testville) >= 1
        assert count_rows(factory, DirtyWindow, DirtyWindow.city_id == testville) == 1
        assert failures(CITY) == before + 1
        assert any(
            getattr(r, "city", None) == CITY and CITY in r.getMessage() for r in caplog.records
        )
        exposed = client.get("/metrics").text
        assert f'fabcity_worker_recompute_failures_total{{city="{CITY}"}}' in exposed

        # Within its backoff it is left alone: other cities' work goes on without retrying it.
        with transaction(factory) as s:
            again = event(
                [flow(quantity=1.5)], source=f"/{OTHER_CITY}/{SITE}", time=f"{DAY}T10:00:00Z"
            )
            ingest(s, [again])
        jobs.recompute_dirty_windows(factory, 100, backoff)
        assert failures(CITY) == before + 1
        assert input_kg(factory, OTHER_CITY) == pytest.approx(4.0)

        # After it, the city is tried again; mended, it catches up.
        now[0] = 11.0
        jobs.recompute_dirty_windows(factory, 100, backoff)
        assert failures(CITY) == before + 2
        with transaction(factory) as s:
            s.execute(delete(Flow).where(Flow.city_id == testville, Flow.amount > 10**12))
        now[0] = 100.0
        jobs.recompute_dirty_windows(factory, 100, backoff)
        assert failures(CITY) == before + 2
        assert count_rows(factory, PendingRollup) == 0
        assert count_rows(factory, DirtyWindow) == 0
        assert backoff.waiting() == set()


class TestEnergyCounters:
    """A device's cumulative counter is read at times the sender chooses. Each reading stays
    under the ingest bounds, but a reset followed by a huge total, again and again, used to add
    a huge use each time: their sum had no bound."""

    def readings(self, totals: list[float]) -> list[dict[str, Any]]:
        source = f"/{CITY}/{SITE}/{DEVICE}"
        return [
            event(
                {"energy_kwh_total": total},
                id=f"meter-{i}",
                source=source,
                type="fabcity.meter.reading",
                time=f"{DAY}T{10 + i // 60:02d}:{i % 60:02d}:00Z",  # a minute apart
            )
            for i, total in enumerate(totals)
        ]

    def electricity_kwh(self, factory: sessionmaker[Session]) -> float:
        with transaction(factory) as s:
            amount = s.scalar(
                select(func.coalesce(func.sum(Flow.amount), 0)).where(
                    Flow.resource == "electricity"
                )
            )
        return int(amount or 0) / 1e6

    def test_resets_and_huge_totals_add_no_use(self, factory: sessionmaker[Session]) -> None:
        register(factory)
        # Forty pairs of a reset to 0 and a total of 1e5 kWh: 4e6 kWh counted before; a rise of
        # 1e5 kWh in a minute is 6e6 kW, past the 1,000 kW bound, so none of it now.
        forged = [0.0, 1e5] * 40
        with transaction(factory) as s:
            assert ingest(s, self.readings(forged)).result.accepted == 80
        assert self.electricity_kwh(factory) == 0.0

    def test_a_real_counter_still_counts(self, factory: sessionmaker[Session]) -> None:
        register(factory)
        # 10.0 → 10.5 → 11.25 kWh a minute apart: 30 kW and 45 kW, each under the bound, so
        # 0.5 + 0.75 = 1.25 kWh used; a reset to 0.2 counts the 0.2 shown since the reset.
        with transaction(factory) as s:
            ingest(s, self.readings([10.0, 10.5, 11.25, 0.2]))
        assert self.electricity_kwh(factory) == pytest.approx(1.45)
