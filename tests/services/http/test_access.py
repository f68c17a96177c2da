"""Keys over the API and the CLI, limits, public reads, and dead letters replayed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.core.models import DeadLetter, Event
from fabcity.registry import keys
from tests.support.city import CITY, DEVICE, SITE, event, flow
from tests.support.procs import FABCITY

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(make_client: MakeClient) -> MakeClient:
    """The HTTP tests' clients (tests/services/http/conftest.py), with keys required unless a
    test says otherwise."""

    def make(**overrides: object) -> TestClient:
        return make_client(**{"auth": "required", **overrides})

    return make


def admin_key(sessions: sessionmaker[Session]) -> dict[str, str]:
    with transaction(sessions) as s:
        return {"Authorization": f"Bearer {keys.create(s, 'admin').secret}"}


def test_keys_are_made_shown_once_rotated_and_revoked(
    make_client: MakeClient, sessions: sessionmaker[Session]
) -> None:
    client = make_client()
    admin = admin_key(sessions)
    made = client.post(
        "/v1/keys", json={"role": "planner", "city": CITY, "name": "city hall"}, headers=admin
    )
    assert made.status_code == 201, made.text
    secret, key_id = made.json()["secret"], made.json()["id"]
    planner = {"X-API-Key": secret}
    assert client.get(f"/v1/cities/{CITY}", headers=planner).status_code == 200
    # Listed without its secret, and only its hash is stored.
    listed = client.get("/v1/keys", headers=admin).json()
    assert all("secret" not in k for k in listed)
    with sessions() as s:
        assert secret not in str([vars(k) for k in keys.list_keys(s)])

    rotated = client.post(f"/v1/keys/{key_id}/rotate", headers=admin)
    assert rotated.status_code == 201
    new = {"X-API-Key": rotated.json()["secret"]}
    assert rotated.json()["city"] == CITY and rotated.json()["role"] == "planner"
    assert client.get(f"/v1/cities/{CITY}", headers=planner).status_code == 401
    assert client.get(f"/v1/cities/{CITY}", headers=new).status_code == 200

    assert client.delete(f"/v1/keys/{rotated.json()['id']}", headers=admin).status_code == 204
    refused = client.get(f"/v1/cities/{CITY}", headers=new)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["type"].endswith("/unauthorized")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"role": "site", "city": CITY}, "needs its site"),
        ({"role": "admin", "city": CITY}, "not bound to a city"),
        ({"role": "device", "city": CITY, "site": SITE, "device": "nope"}, "no device"),
        ({"role": "planner", "city": "atlantis"}, "no city"),
    ],
)
def test_a_key_names_exactly_its_tenant(
    make_client: MakeClient, sessions: sessionmaker[Session], body: dict[str, str], says: str
) -> None:
    response = make_client().post("/v1/keys", json=body, headers=admin_key(sessions))
    assert response.status_code in (404, 422)
    assert says in response.json()["detail"]


def test_cli_prints_the_first_admin_key_alone_on_stdout(sqlite_url: str) -> None:
    env = {"FABCITY_DATABASE_URL": sqlite_url, "PATH": "/usr/bin:/bin"}
    made = subprocess.run(
        [FABCITY, "keys", "create", "--role", "admin"], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("fc_") and "\n" not in secret
    assert "shown this once" in made.stderr
    engine = make_engine(sqlite_url)
    with transaction(make_sessionmaker(engine)) as s:
        who = keys.authenticate(s, secret)
    engine.dispose()
    assert who is not None and who.role == "admin"


def test_a_key_over_its_rate_gets_429_with_retry_after(
    make_client: MakeClient, sessions: sessionmaker[Session]
) -> None:
    client = make_client(rate_limit_per_s=1, rate_limit_burst=3)
    admin = admin_key(sessions)
    codes = [client.get("/v1/resources", headers=admin).status_code for _ in range(6)]
    assert codes[:3] == [200, 200, 200]
    assert 429 in codes[3:]
    limited = client.get("/v1/resources", headers=admin)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    # Another key has a bucket of its own.
    assert client.get("/v1/resources", headers=admin_key(sessions)).status_code == 200


def test_a_body_over_the_limit_is_413_before_it_is_read(
    make_client: MakeClient, sessions: sessionmaker[Session]
) -> None:
    client = make_client(max_body_bytes=1000)
    response = client.post(
        "/v1/cities/testville/okw",
        content=b"x" * 5000,
        headers={**admin_key(sessions), "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")


def test_public_reads_let_a_dashboard_read_without_a_key_but_not_write(
    make_client: MakeClient,
) -> None:
    closed = make_client()
    assert closed.get(f"/v1/cities/{CITY}/sites").status_code == 401
    assert closed.get("/healthz").status_code == 200
    assert closed.get("/openapi.json").status_code == 200
    open_ = make_client(public_reads=True)
    assert open_.get(f"/v1/cities/{CITY}/sites").status_code == 200
    assert open_.get("/v1/keys").status_code == 403
    assert open_.post("/v1/cities", json={}).status_code == 401


def test_dead_letters_are_listed_shown_and_replayed_once_their_cause_is_fixed(
    make_client: MakeClient, sessions: sessionmaker[Session]
) -> None:
    client = make_client()
    admin = admin_key(sessions)
    prefix = client.app.state.fabcity.settings.mqtt_topic_prefix  # type: ignore[attr-defined]
    good = event(flow("consume", "filament", 1, "kg", "city"), source=f"/{CITY}/{SITE}/late")
    with transaction(sessions) as s:
        s.add_all(
            [
                DeadLetter(
                    received_at=datetime.now(UTC),
                    channel="mqtt",
                    topic=f"{prefix}/{CITY}/{SITE}/late/events",
                    payload=orjson.dumps(good),
                    reason="no device 'late'",
                ),
                DeadLetter(
                    received_at=datetime.now(UTC),
                    channel="mqtt",
                    topic=f"{prefix}/{CITY}/{SITE}/{DEVICE}/events",
                    payload=b"\xff not json",
                    reason="payload is not JSON",
                ),
            ]
        )
    listed = client.get("/v1/dead-letters", headers=admin).json()
    assert [d["reason"] for d in listed] == ["no device 'late'", "payload is not JSON"]
    shown = client.get(f"/v1/dead-letters/{listed[1]['id']}", headers=admin).json()
    assert shown["payload_base64"] == "/yBub3QganNvbg=="
    only = client.get("/v1/dead-letters", params={"reason_contains": "JSON"}, headers=admin)
    assert [d["id"] for d in only.json()] == [listed[1]["id"]]

    # Still refused: kept with the reason it came with, this replay's outcome apart.
    again = client.post(f"/v1/dead-letters/{listed[0]['id']}/replay", headers=admin).json()
    assert again == {"replayed": 1, "ingested": 0, "still_dead": 1, "events": 0}
    after = client.get(f"/v1/dead-letters/{listed[0]['id']}", headers=admin).json()
    assert (after["reason"], after["replays"]) == ("no device 'late'", 1)
    assert "register it first" in after["last_replay_outcome"]
    assert after["last_replay_at"] is not None
    created = client.post(
        f"/v1/cities/{CITY}/sites/{SITE}/devices",
        json={"slug": "late", "name": "Late"},
        headers=admin,
    )
    assert created.status_code == 201
    replayed = client.post(
        "/v1/dead-letters/replay", json={"topic_prefix": f"{prefix}/{CITY}/"}, headers=admin
    ).json()
    assert replayed == {"replayed": 2, "ingested": 1, "still_dead": 1, "events": 1}
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 1
        assert [d.reason[:14] for d in s.scalars(select(DeadLetter))] == ["payload is not"]
    assert client.get(f"/v1/dead-letters/{listed[0]['id']}", headers=admin).status_code == 404
