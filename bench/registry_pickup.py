"""How soon a registry change reaches the bridge: registration to `listening_since`.

    python -m bench.registry_pickup sqlite|postgresql [DEVICES]

An in-process bridge (as under `fabcity up`) against a fresh database; DEVICES devices on
their own topics are registered one after another, each timed from its commit to the moment
the bridge records that it listens (the broker acknowledged its subscription). Then the cost
of one look at `registry_version`, what the bridge pays every half second. Needs Mosquitto
on 127.0.0.1:1883 (and PostgreSQL on 5432 for `postgresql`). Target: within a second.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import create_engine, text

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import Device, Site
from fabcity.core.settings import Settings
from fabcity.migrations import upgrade
from fabcity.registry import entries
from schemas import api
from services.mqtt.bridge import Bridge
from workers.dispatch import NoDispatch

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def database(kind: str) -> tuple[str, str | None]:
    tag = uuid.uuid4().hex[:8]
    if kind == "sqlite":
        return f"sqlite:////tmp/bench-pickup-{tag}.db", None
    name = f"bench_pickup_{tag}"
    with create_engine(ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    url, name = database(kind)
    upgrade.upgrade(url)
    tag = f"bench-pickup-{uuid.uuid4().hex[:6]}"
    settings = Settings(
        database_url=url,
        mqtt_client_id=tag,
        mqtt_topic_prefix=f"{tag}/v1",
        mqtt_share_group=tag.replace("-", ""),
        mqtt_adapter_topics=[],
    )
    api_side = make_sessionmaker(make_engine(url))
    with transaction(api_side) as s:
        city = entries.create_city(
            s, api.CityIn(slug="pickup", name="Pickup", country="ES", timezone="Europe/Madrid")
        )
        site = entries.create_site(s, city, api.SiteIn(slug="lab", name="Lab"))
        site_id = site.id
    bridge_side = make_sessionmaker(make_engine(url))
    bridge = Bridge(settings, bridge_side, NoDispatch()).start()
    while not bridge.connected.is_set():
        time.sleep(0.05)
    taken: list[float] = []
    try:
        for i in range(n):
            with transaction(api_side) as s:
                lab = s.get_one(Site, site_id)
                body = api.DeviceIn(
                    slug=f"d{i}", name="d", adapter="cloudevents", settings={"topic": f"{tag}/d{i}"}
                )
                device_id = entries.create_device(s, lab, body).id
            at = datetime.now(UTC)
            while True:
                with transaction(api_side) as s:
                    since = s.get_one(Device, device_id).listening_since
                if since is not None:
                    break
                time.sleep(0.01)
            taken.append((since - at).total_seconds())
    finally:
        bridge.stop()
    looks = []
    for _ in range(200):
        started = time.perf_counter()
        with transaction(bridge_side) as s:
            entries.registry_version(s)
        looks.append(time.perf_counter() - started)
    print(
        f"{kind}: registration to listening over {n} devices: median {statistics.median(taken):.3f}"
        f" s, max {max(taken):.3f} s (target: within 1 s); one look at the registry version: "
        f"median {statistics.median(looks) * 1000:.2f} ms"
    )
    if name is not None:
        with create_engine(ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
