"""Role × endpoint × tenant: every route of the app, called with every kind of key.

Built from the app's own routes and the policy table, so a new route without a policy fails
here until someone decides who may call it. An allowed call must get past the access check
(its answer is then the endpoint's own: 2xx, or 404/422 for the placeholder ids and empty
bodies used here); a refused one must be 401 (no key, a bad key) or 403 (wrong role or tenant).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI, routing
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import Mount

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.ingest.service import ingest
from fabcity.registry import entries, keys
from schemas import api
from services.http import auth
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow, register
from workers.dispatch import NoDispatch

OTHER_CITY = "otherville"

# Values for path parameters: real slugs for the tenant, ids that exist nowhere for the rest
# (an allowed call then answers 404, which is past the access check).
PLACEHOLDERS = {
    "site": SITE,
    "device": DEVICE,
    "metric": "fci",
    "year": "2025",
    "design_id": "987654",
    "subscription_id": "987654",
    "key_id": "987654",
    "letter_id": "987654",
    "name": "style.css",
}


def routes_of(app: FastAPI) -> Iterator[tuple[str, str, object]]:
    """(method, path template, route) for every route the app serves, routers flattened."""
    included = getattr(routing, "_IncludedRouter", None)

    def walk(items: list[Any]) -> Iterator[Any]:
        for r in items:
            if included is not None and isinstance(r, included):
                yield from walk(r.effective_candidates())
            else:
                yield r

    for r in walk(list(app.router.routes)):
        original = getattr(r, "original_route", r)
        for method in sorted(getattr(original, "methods", None) or {"*"}):
            if method != "HEAD":
                yield method, r.path, original


@dataclass(frozen=True)
class Caller:
    name: str
    role: str | None  # None: no key or a bad key
    city: str | None = None
    site: str | None = None
    header: dict[str, str] | None = None


# Each test its own world: the matrix's admin DELETEs retire the city the other tests post to.
@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, list[Caller]]]:
    from fabcity.migrations import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'fabcity.db'}"
    upgrade.upgrade(url)
    engine = make_engine(url)
    factory: sessionmaker[Session] = make_sessionmaker(engine)
    register(factory)
    with transaction(factory) as s:
        other = entries.create_city(
            s, api.CityIn(slug=OTHER_CITY, name="Other", country="NL", timezone="Europe/Amsterdam")
        )
        entries.create_site(s, other, api.SiteIn(slug=SITE, name="Lab"))
        # Events refer to the entries the matrix names, so an admin's DELETE retires them
        # (kept, with their keys) instead of deleting them under the callers that follow.
        refer = [event(flow(), source=f"/{CITY}/{SITE}/{DEVICE}")]
        refer.append(event(flow(), source=f"/{OTHER_CITY}/{SITE}"))
        assert ingest(s, refer).result.accepted == 2

        def key(role: str, **scope: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys.create(s, role, **scope).secret}"}

        callers = [
            Caller("anonymous", None, header={}),
            Caller("bad key", None, header={"Authorization": "Bearer fc_0000000000000000_x"}),
            Caller("admin", "admin", header=key("admin")),
            Caller("planner of all", "planner", header=key("planner")),
            Caller("planner of testville", "planner", CITY, header=key("planner", city=CITY)),
            Caller("site lab", "site", CITY, SITE, header=key("site", city=CITY, site=SITE)),
            Caller(
                "site hub", "site", CITY, OTHER_SITE, header=key("site", city=CITY, site=OTHER_SITE)
            ),
            Caller(
                "device printer",
                "device",
                CITY,
                SITE,
                header={"X-API-Key": keys.create(s, "device", CITY, SITE, DEVICE).secret},
            ),
        ]
    # Every route is called with a bad key from one address: no limit on failed lookups here
    # (it has tests of its own, tests/security/test_identities.py).
    settings = settings_for(url, auth="required", rate_limit_per_s=0, auth_failure_per_min=0)
    app = create_app(settings, "both", factory=factory, dispatcher=NoDispatch())
    with TestClient(app) as client:
        yield client, callers
    engine.dispose()


def expected(
    policy: auth.Policy, caller: Caller, method: str, city: str | None, path: str = ""
) -> int | None:
    """The refusal a call must get, or None when it must get past the access check."""
    if policy.public:
        return None
    if caller.role is None:
        return 401
    if caller.role not in policy.roles:
        return 403
    # A site or device key sees its own site only; the matrix's paths name SITE.
    if "{site}" in path and caller.role in ("site", "device") and caller.site != SITE:
        return 403
    if city is not None and caller.city is not None and caller.role != "admin":
        return None if caller.city == city else 403
    return None


def test_every_route_has_a_policy() -> None:
    app = create_app(settings_for("sqlite://"), "both", dispatcher=NoDispatch())
    missing = [
        f"{method} {path}"
        for method, path, route in routes_of(app)
        if not isinstance(route, Mount)
        and not auth.is_public_path(path)
        and (method, path) not in auth.POLICIES
    ]
    assert not missing, f"decide who may call these (services/http/auth.py POLICIES): {missing}"
    # Mounted apps (Prometheus' /metrics) bypass the route check: they must be public paths.
    mounts = [r.path for _, _, r in routes_of(app) if isinstance(r, Mount)]
    assert all(auth.is_public_path(p) for p in mounts), mounts


OPERATOR_PATHS = ("/v1/keys", "/v1/dead-letters", "/v1/subscriptions")


def intended_roles(method: str, path: str) -> set[str]:
    """Who should call a route, said independently of the policy table: planners read what is
    not an operator's, sites and devices post events, admins do everything."""
    if path in ("/v1/events", "/v1/events/import") and method == "POST":
        return {"admin", "site", "device"}
    if path in ("/v1/events/template", "/v1/definitions"):
        return set()  # a blank spreadsheet, and what the metrics mean: no city's data
    if path in ("/v1/whoami", "/v1/resources") and method == "GET":
        # who a key is, and the vocabulary it writes in: every key needs them
        return {"admin", "planner", "site", "device"}
    if path == "/v1/cities/{city}/targets/{metric}":
        return {"admin", "planner"}  # a city's goals are its planners' to set
    if path == "/v1/cities/{city}/sites/{site}/devices" and method == "GET":
        return {"admin", "planner", "site"}  # a lab's page lists its machines
    if path in ("/v1/events", "/v1/events/{source:path}/{id}") and method == "GET":
        return {"admin", "planner", "site"}  # what a lab's messages became: its manager's too
    if path == "/v1/mci" and method == "POST":  # a calculation, stores nothing
        return {"admin", "planner"}
    if method == "GET" and path.startswith("/v1/") and not path.startswith(OPERATOR_PATHS):
        return {"admin", "planner"}
    return {"admin"}


def test_policies_are_what_the_roles_mean() -> None:
    app = create_app(settings_for("sqlite://"), "both", dispatcher=NoDispatch())
    for method, path, route in routes_of(app):
        if isinstance(route, Mount) or not path.startswith("/v1/"):
            continue
        policy = auth.policy_for(method, path)
        assert set(policy.roles) == intended_roles(method, path), f"{method} {path}"


def test_matrix(world: tuple[TestClient, list[Caller]]) -> None:
    client, callers = world
    checked = 0
    failures: list[str] = []
    for method, path, route in routes_of(client.app):  # type: ignore[arg-type]
        if isinstance(route, Mount) or method == "*":
            continue
        if path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
            continue
        policy = auth.policy_for(method, path)
        cities: list[str | None] = [CITY, OTHER_CITY] if "{city}" in path else [None]
        if path == "/v1/compare":
            cities = [CITY, OTHER_CITY]
        for city in cities:
            url = path.replace("{city}", city or CITY)
            for name, value in PLACEHOLDERS.items():
                url = url.replace("{" + name + "}", value)
            params = {"cities": city} if path == "/v1/compare" else None
            for caller in callers:
                response = client.request(method, url, headers=caller.header, params=params)
                want = expected(policy, caller, method, city, path)
                got = response.status_code
                ok = got == want if want is not None else got not in (401, 403) and got < 500
                if not ok:
                    failures.append(
                        f"{caller.name}: {method} {url} -> {got}, want {want or 'allowed'}"
                    )
                if got in (401, 403):
                    assert response.headers["content-type"].startswith("application/problem+json")
                checked += 1
    assert not failures, "\n".join(failures)
    assert checked > 300  # the matrix is what it claims to be


def test_a_site_key_writes_its_own_site_only(world: tuple[TestClient, list[Caller]]) -> None:
    """The source of each event is held against the key inside the ingest path: a batch keeps
    its good events and reports the others by index."""
    client, callers = world
    lab = next(c for c in callers if c.name == "site lab")
    batch = [
        _event(f"/{CITY}/{SITE}"),
        _event(f"/{CITY}/{OTHER_SITE}"),
        _event(f"/{CITY}/{SITE}/{DEVICE}"),
        _event(f"/{OTHER_CITY}/{SITE}"),
    ]
    response = client.post(
        "/v1/events",
        json=batch,
        headers={**(lab.header or {}), "content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1, 3]
    assert all("outside what this key may write" in r["error"] for r in body["rejected"])

    device = next(c for c in callers if c.name == "device printer")
    alone = client.post(
        "/v1/events",
        json=_event(f"/{CITY}/{SITE}"),  # its site, but not its device
        headers={**(device.header or {}), "content-type": "application/cloudevents+json"},
    )
    assert alone.status_code == 422
    assert "outside what this key may write" in alone.json()["detail"]


def _event(source: str) -> dict[str, Any]:
    import uuid

    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": source,
        "type": "fabcity.flow",
        "time": "2026-03-10T10:00:00+01:00",
        "data": {"action": "consume", "resource": "filament", "quantity": 1, "unit": "kg",
                 "ring": "city"},
    }  # fmt: skip
