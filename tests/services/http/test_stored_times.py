"""Every time the API answers carries its offset, on SQLite as on PostgreSQL.

SQLite keeps no offset: a column of SQLAlchemy's `DateTime(timezone=True)` gave back a naive
time there, so a subscription POSTed answered `…Z` and the GET of it had none. The test walks
the OpenAPI document: every GET whose answer can hold a `date-time` is called on a city where
each such field has a value, and each time found must end in `Z` or `±hh:mm`. A response
model with a time the city below does not fill fails the test, so a new one cannot slip by.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, select

from fabcity.core import models
from fabcity.core.sql import UtcDateTime
from fabcity.ingest.deadletters import dead_letter
from tests.fixtures import OKH, OKW
from tests.support.api import CityClient, city_client, ingest
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow

OFFSET = re.compile(r"(Z|[+-]\d\d:\d\d)$")
# The path parameters of the GETs, by name. A GET with a parameter not named here fails the
# test: give it a value that reaches a row with every time filled.
PATH_VALUES = {"city": CITY, "site": SITE, "year": "2026"}
# Query parameters a GET needs to answer with times at all (hourly points start at a time).
QUERIES: dict[str, dict[str, str]] = {
    "/v1/cities/{city}/metrics": {
        "interval": "hour",
        "from": "2026-03-10",
        "to": "2026-03-10",
        "names": "input_kg",
    },
    "/v1/compare": {
        "cities": CITY,
        "interval": "hour",
        "from": "2026-03-10",
        "to": "2026-03-10",
        "names": "input_kg",
    },
}

# More answers of a GET, where one row cannot hold every time its model has: an event that a
# correction replaced has corrections but counts in no window; its replacement, the reverse.
ALSO = {"/v1/events/{source}/{id}": [f"/v1/events/{CITY}/{SITE}/e-1-fix"]}


def _fill_every_time(client: CityClient) -> dict[str, str]:
    """A city where every stored time the API shows has a value; returns the ids to GET."""
    ingest(client, [event([flow(quantity=2.0)], id="e-1", time="2026-03-10T10:00:00+01:00")])
    # A correction of it, whose receive time the event's view shows (where corrections exist).
    fix = {**event([flow(quantity=0.2)], id="e-1-fix"), "supersedes": "e-1"}
    client.post("/v1/events", json=fix, headers={"content-type": "application/cloudevents+json"})
    okw = client.post(
        f"/v1/cities/{CITY}/okw",
        content=(OKW / "labs.yml").read_bytes(),
        headers={"content-type": "application/yaml"},
    )
    assert okw.status_code == 200, okw.text
    design = client.post(
        "/v1/designs",
        params={"url": "https://designs.example.org/okh/stool.toml"},
        content=(OKH / "stool.toml").read_bytes(),
        headers={"content-type": "application/toml"},
    )
    assert design.status_code == 201, design.text
    key = client.post("/v1/keys", json={"role": "planner", "city": CITY})
    assert key.status_code == 201, key.text
    assert client.delete(f"/v1/keys/{key.json()['id']}").status_code == 204
    posted = client.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook", "city": CITY})
    assert posted.status_code == 201, posted.text
    subscription = posted.json()
    # A registry change, logged with its time, and a target for a metric.
    client.patch(f"/v1/cities/{CITY}/sites/{OTHER_SITE}", json={"name": "Hub, renamed"})
    client.put(f"/v1/cities/{CITY}/targets/input_kg", json={"value": 1, "due": "2030-12-31"})
    # What only the bridge and the webhook sender write, written as they do: through the ORM,
    # with aware times in another zone than UTC, so a type that kept wall clocks would show.
    cest = datetime(2026, 7, 1, 12, 0, tzinfo=UTC).astimezone(ZoneInfo("Europe/Madrid"))
    with client.factory.begin() as s:
        device = s.scalars(select(models.Device).where(models.Device.slug == DEVICE)).one()
        device.last_seen = cest
        sub = s.get(models.Subscription, subscription["id"])
        assert sub is not None
        sub.next_attempt_at = cest + timedelta(minutes=5)
        s.add(
            models.Delivery(
                subscription_id=sub.id, attempted_at=cest, stream="events", first_id=1,
                last_id=1, count=1, attempt=1, status_code=503, ok=False, error="503",
                duration_ms=1.5,
            )
        )  # fmt: skip
        letter = dead_letter(cest, "mqtt", "fabcity/v1/x", b"{", "not JSON")
        letter.last_replay_at = cest
        letter.last_replay_outcome = "still not JSON"
        s.add(letter)
        s.flush()
        letter_id = letter.id
        # Any other time left empty (a retirement, a last replay) gets one too.
        for table in models.Base.metadata.sorted_tables:
            for column in table.columns:
                if isinstance(column.type, UtcDateTime) and column.nullable:
                    s.execute(table.update().where(column.is_(None)).values({column.name: cest}))
    # The POST's answer and the GET's agree to the character.
    again = client.get(f"/v1/subscriptions/{subscription['id']}").json()
    assert again["created_at"] == subscription["created_at"]
    assert OFFSET.search(subscription["created_at"])
    return {
        "design_id": str(design.json()["id"]),
        "key_id": str(key.json()["id"]),
        "subscription_id": str(subscription["id"]),
        "letter_id": str(letter_id),
        "source": f"{CITY}/{SITE}",
        "id": "e-1",
    }


class _Spec:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.components: dict[str, Any] = spec["components"]["schemas"]

    def resolve(self, schema: dict[str, Any], model: str) -> tuple[dict[str, Any], str]:
        while "$ref" in schema:
            model = schema["$ref"].rsplit("/", 1)[1]
            schema = self.components[model]
        return schema, model

    def time_fields(
        self,
        schema: dict[str, Any],
        model: str = "",
        field: str = "",
        seen: frozenset[str] = frozenset(),
    ) -> set[tuple[str, str]]:
        """(model, field) of every `date-time` an answer of this schema can hold."""
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            if name in seen:
                return set()
            seen = seen | {name}
        schema, model = self.resolve(schema, model)
        found = {(model, field)} if schema.get("format") == "date-time" else set()
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key, []):
                found |= self.time_fields(sub, model, field, seen)
        for name, sub in schema.get("properties", {}).items():
            found |= self.time_fields(sub, model, name, seen)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                found |= self.time_fields(schema[key], model, field, seen)
        return found

    def times(
        self, value: Any, schema: dict[str, Any], model: str = "", field: str = ""
    ) -> list[tuple[str, str, str]]:
        """(model, field, text) of every time in `value`, an answer of `schema`."""
        if value is None:
            return []
        schema, model = self.resolve(schema, model)
        found: list[tuple[str, str, str]] = []
        # A `datetime | date` holds dates too: only a text with a time of day is a time.
        if schema.get("format") == "date-time" and isinstance(value, str) and "T" in value:
            found.append((model, field, value))
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key, []):
                found += self.times(value, sub, model, field)
        if isinstance(value, dict):
            for name, item in value.items():
                sub = schema.get("properties", {}).get(name, schema.get("additionalProperties"))
                if isinstance(sub, dict):
                    found += self.times(item, sub, model, name)
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            for item in value:
                found += self.times(item, schema["items"], model, field)
        return found


def test_every_time_answered_carries_its_offset(db_url: str) -> None:
    with city_client(db_url) as client:
        values = PATH_VALUES | _fill_every_time(client)
        document = client.app.openapi()  # type: ignore[attr-defined]
        spec = _Spec(document)
        expected: set[tuple[str, str]] = set()
        answered: list[tuple[str, str, str, str]] = []
        for path, operations in document["paths"].items():
            get = operations.get("get")
            ok = get and get["responses"].get("200", {}).get("content", {}).get("application/json")
            if not ok or not (fields := spec.time_fields(ok.get("schema", {}))):
                continue
            expected |= fields
            names = re.findall(r"{(\w+)(?::\w+)?}", path)
            unknown = [n for n in names if n not in values]
            assert not unknown, f"GET {path}: give {unknown} a value in PATH_VALUES"
            url = re.sub(r"{(\w+)(?::\w+)?}", lambda m: values[m.group(1)], path)
            for each in (url, *ALSO.get(path, [])):
                response = client.get(each, params=QUERIES.get(path, {}))
                assert response.status_code == 200, (each, response.text)
                for model, field, text in spec.times(response.json(), ok["schema"]):
                    answered.append((path, model, field, text))
    naive = [a for a in answered if not OFFSET.search(a[3])]
    assert not naive, f"times without an offset: {naive}"
    filled = {(model, field) for _, model, field, _ in answered}
    assert expected - filled == set(), "fill these times in _fill_every_time"


def test_every_stored_time_is_one_type() -> None:
    """A new column of times must use `UtcDateTime`, or SQLite drops its offset again."""
    other = [
        f"{table.name}.{column.name}"
        for table in models.Base.metadata.tables.values()
        for column in table.columns
        # A `UtcDateTime` is a decorator around a DateTime, not one itself.
        if isinstance(column.type, DateTime)
    ]
    assert other == []
