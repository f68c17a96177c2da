"""Six weeks of a city's history with every kind of flow a metric reads, rolled up: what
the read tests compare one way of reading with another on (`tests/fabcity/read`)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.ingest.service import ingest
from fabcity.read import metrics
from fabcity.registry import designs, entries, okh
from schemas import api
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow, register
from workers.jobs import recompute_dirty_windows

# Days around the spring clock change in Madrid (29 March 2026: a day of 23 hours).
FIRST, LAST = date(2026, 3, 2), date(2026, 4, 12)
NOW = datetime(2026, 4, 8, 12, tzinfo=UTC)  # later windows are partial, or in the future
ALL = list(metrics.METRICS)
FAR = "farville"
# A registered design of known mass: things made of it have their mass modelled.
BRACKET = "https://example.org/bracket/okh.yml"
MANIFEST = Path(__file__).parents[1] / "fixtures" / "okh" / "bracket.yml"


def flows(rng: random.Random) -> list[dict[str, Any]]:
    """A few flows of every kind a metric reads: rings, fates, recycled, states, devices."""
    ring = lambda: rng.choice(["site", "city", "region", "beyond"])  # noqa: E731
    fate = rng.choice(["reuse", "recycle", "compost", "energy", "incineration", "landfill"])
    every = [
        flow(quantity=rng.randint(0, 40) / 4, ring=ring(), recycled=rng.random() < 0.3),
        flow("consume", rng.choice(["wood", "metal", "recycled_plastic"]), rng.randint(1, 9),
             ring=ring()),
        flow("produce", "part", rng.randint(0, 5), "count", ring=ring()),
        flow("produce", "part", rng.randint(1, 3), "count", ring=ring(), design=BRACKET),
        flow("produce", "plastic", rng.randint(1, 9) / 8, "kg", ring=ring()),
        flow("modify", "furniture", 1, "count", ring=ring()),
        flow("discard", "plastic", rng.randint(1, 9) / 2, "kg", fate=fate, ring=ring()),
        flow("recover", "recycled_plastic", 0.5, "kg"),
        flow("consume", "electricity", rng.randint(1, 30), "kWh", ring=ring()),
        flow("use", "machine_hours", rng.randint(1, 4), "h"),
        flow("work", rng.choice(["work_hours", "training_hours"]), 2, "h"),
    ]  # fmt: skip
    return rng.sample(every, rng.randint(1, 4))


def history(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Six weeks of a city of two sites and a device, posted at random hours (some on the day
    the clocks go forward), some estimated, then rolled up."""
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    register(factory)
    with transaction(factory) as s:
        designs.import_manifest(s, okh.load(MANIFEST.read_bytes(), "yaml"), BRACKET)
    with transaction(factory) as s:  # a city to compare with, on the other side of the world
        far = entries.create_city(
            s, api.CityIn(slug=FAR, name="Far", country="NZ", timezone="Pacific/Auckland")
        )
        entries.create_site(s, far, api.SiteIn(slug=SITE, name="Lab"))
    rng = random.Random(20)
    sources = [f"/{CITY}/{SITE}", f"/{CITY}/{OTHER_SITE}", f"/{CITY}/{SITE}/{DEVICE}",
               f"/{FAR}/{SITE}"]  # fmt: skip
    items = []
    for _ in range(160):
        day = FIRST + timedelta(days=rng.randint(0, (LAST - FIRST).days - 5))
        at = datetime(day.year, day.month, day.day, rng.randint(0, 23), tzinfo=UTC)
        items.append(event(flows(rng), source=rng.choice(sources), time=at.isoformat()))
    for day in (date(2026, 3, 29), date(2026, 3, 28)):  # the short day, hour by hour
        for hour in range(0, 23, 2):
            at = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
            items.append(event(flows(rng), source=rng.choice(sources), time=at.isoformat()))
    with transaction(factory) as s:
        assert not ingest(s, items, received_at=NOW).result.rejected
    assert recompute_dirty_windows(factory, 1000)
    yield factory
    engine.dispose()
