"""Identities: what a key may learn about other cities, and guessing keys.

- A planner of one city lists the registry's cities: it sees its own, not the others' names and
  populations (an admin, a planner of every city and the keys-off mode still see all).
- An address that sends forged, well-formed keys is refused with 429 once it has failed
  `auth_failure_burst` lookups, its good keys too, while keys from other addresses work on.
  Counted in the API process and, beside Celery, in Redis (where several API processes share
  one count).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.registry import entries, keys
from schemas import api
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.city import CITY, SITE, register
from workers.dispatch import NoDispatch

OTHER_CITY = "otherville"
ATTACKER = ("203.0.113.7", 40000)
NEIGHBOUR = ("198.51.100.9", 40000)


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    """The test city and a second city with its population, on a migrated SQLite database."""
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    with transaction(factory) as s:
        entries.create_city(
            s,
            api.CityIn(
                slug=OTHER_CITY,
                name="Otherville",
                country="PT",
                timezone="Europe/Lisbon",
                population=123456,
            ),
        )
    yield factory
    engine.dispose()


def bearer(sessions: sessionmaker[Session], role: str, city: str | None = None) -> dict[str, str]:
    with transaction(sessions) as s:
        return {"Authorization": f"Bearer {keys.create(s, role, city=city).secret}"}


def client_of(
    sqlite_url: str,
    sessions: sessionmaker[Session],
    address: tuple[str, int] = ("testclient", 50000),
    **overrides: object,
) -> TestClient:
    settings = settings_for(sqlite_url, **{"auth": "required", **overrides})
    app = create_app(settings, "both", factory=sessions, dispatcher=NoDispatch())
    return TestClient(app, client=address)


def slugs(client: TestClient, headers: dict[str, str] | None = None) -> list[str]:
    response = client.get("/v1/cities?limit=500", headers=headers or {})
    assert response.status_code == 200, response.text
    return [c["slug"] for c in response.json()["items"]]


class TestTheCitiesList:
    def test_a_planner_of_one_city_lists_only_that_city(
        self, sqlite_url: str, sessions: sessionmaker[Session]
    ) -> None:
        with client_of(sqlite_url, sessions) as client:
            planner = bearer(sessions, "planner", CITY)
            listed = client.get("/v1/cities?limit=500", headers=planner).json()["items"]
            assert [c["slug"] for c in listed] == [CITY]
            assert "123456" not in str(listed)
            # The other city's planner sees only its own.
            assert slugs(client, bearer(sessions, "planner", OTHER_CITY)) == [OTHER_CITY]
            # A site's key reads no registry at all.
            with transaction(sessions) as s:
                site = {"X-API-Key": keys.create(s, "site", city=CITY, site=SITE).secret}
            assert client.get("/v1/cities", headers=site).status_code == 403

    def test_admins_and_planners_of_every_city_list_them_all(
        self, sqlite_url: str, sessions: sessionmaker[Session]
    ) -> None:
        with client_of(sqlite_url, sessions) as client:
            assert slugs(client, bearer(sessions, "admin")) == [OTHER_CITY, CITY]
            assert slugs(client, bearer(sessions, "planner")) == [OTHER_CITY, CITY]
        with client_of(sqlite_url, sessions, auth="off") as client:
            assert slugs(client) == [OTHER_CITY, CITY]

    def test_the_dashboard_picks_the_planners_city_from_the_list(
        self, sqlite_url: str, sessions: sessionmaker[Session]
    ) -> None:
        """The dashboard fills its city picker from /v1/cities?limit=500 and reads the first;
        a planner's list holds its city, whose summary it may then read."""
        with client_of(sqlite_url, sessions) as client:
            planner = bearer(sessions, "planner", CITY)
            first = slugs(client, planner)[0]
            assert client.get(f"/v1/cities/{first}/summary", headers=planner).status_code == 200


def forged() -> str:
    """A key of the right shape (prefix, lookup id, secret) that names no key."""
    with_prefix = keys.PREFIX + secrets.token_hex(keys.LOOKUP_LEN // 2)
    return f"{with_prefix}_{secrets.token_urlsafe(32)}"


@pytest.fixture(params=["in-process", "redis"])
def limits(request: pytest.FixtureRequest) -> dict[str, object]:
    """Where failures are counted: in the API process, or in Redis beside Celery."""
    if request.param == "redis":
        return {"worker_mode": "celery", "redis_url": request.getfixturevalue("redis_url")}
    return {}


class TestGuessingKeys:
    def test_forged_keys_from_one_address_get_429_while_other_addresses_go_on(
        self, sqlite_url: str, sessions: sessionmaker[Session], limits: dict[str, object]
    ) -> None:
        settings = settings_for(sqlite_url, auth="required", **limits)
        app = create_app(settings, "both", factory=sessions, dispatcher=NoDispatch())
        burst = settings.auth_failure_burst
        good = bearer(sessions, "planner", CITY)
        with (
            TestClient(app, client=ATTACKER) as attacker,
            TestClient(app, client=NEIGHBOUR) as neighbour,
        ):
            # A good key works from the attacker's address before it starts guessing.
            assert attacker.get("/v1/resources", headers=good).status_code == 200
            started = time.perf_counter()
            answers = [
                attacker.get("/v1/resources", headers={"X-API-Key": forged()}) for _ in range(400)
            ]
            elapsed = time.perf_counter() - started
            codes = [a.status_code for a in answers]
            assert codes[:burst] == [401] * burst
            # Past the burst, one more lookup per refill (auth_failure_per_min) while it runs.
            refills = int(elapsed * settings.auth_failure_per_min / 60) + 1
            assert set(codes[burst:]) <= {401, 429}
            assert codes[burst:].count(401) <= refills, f"400 forged keys in {elapsed:.2f} s"
            assert codes[burst] == 429
            refused = next(a for a in reversed(answers) if a.status_code == 429)
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["status"] == 429
            assert int(refused.headers["retry-after"]) >= 1
            # While it waits, the address gets no answer to a key: a right guess would show.
            assert attacker.get("/v1/resources", headers=good).status_code == 429
            # Another address, with a good key, is not held back; a successful key never counts
            # as a failure.
            for _ in range(3 * burst):
                assert neighbour.get("/v1/resources", headers=good).status_code == 200
            # A forged key from the other address is still answered 401, not 429.
            assert neighbour.get("/v1/resources", headers={"X-API-Key": forged()}).status_code == (
                401
            )

    def test_the_limit_is_a_setting(self, sqlite_url: str, sessions: sessionmaker[Session]) -> None:
        with client_of(sqlite_url, sessions, ATTACKER, auth_failure_burst=3) as client:
            codes = [
                client.get("/v1/resources", headers={"X-API-Key": forged()}).status_code
                for _ in range(5)
            ]
            assert codes == [401, 401, 401, 429, 429]
        with client_of(sqlite_url, sessions, ATTACKER, auth_failure_per_min=0) as client:
            codes = [
                client.get("/v1/resources", headers={"X-API-Key": forged()}).status_code
                for _ in range(50)
            ]
            assert set(codes) == {401}
