"""Hour windows are real hours, labelled with their offset; days are local days of 23, 24 or
25 hours, and `utilization` divides by their true length. Both changes of clocks, in zones that
move by an hour (Madrid, New York), by an hour on a half-hour offset (Adelaide) and by half an
hour (Lord Howe), through the API on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import pytest

from tests.support.api import CityClient, city_client, ingest
from tests.support.city import event, flow

# (zone, day, [(event time, kg of filament consumed)], hour windows in the day,
#  {window start: kg}: the windows the events fall in)
CHANGES = [
    # The case: 02:30+02:00 (00:30 UTC) and 02:30+01:00 (01:30 UTC) are an hour apart,
    # and were summed in one window labelled 02:00+02:00.
    ("Europe/Madrid", "2026-10-25",
     [("2026-10-25T02:30:00+02:00", 1.0), ("2026-10-25T02:30:00+01:00", 2.0)], 25,
     {"2026-10-25T02:00:00+02:00": 1.0, "2026-10-25T02:00:00+01:00": 2.0}),
    # Forward at 02:00+01:00: there is no 02:00 in Madrid that day, and 23 hours.
    ("Europe/Madrid", "2026-03-29",
     [("2026-03-29T01:30:00+01:00", 1.0), ("2026-03-29T03:30:00+02:00", 2.0)], 23,
     {"2026-03-29T01:00:00+01:00": 1.0, "2026-03-29T03:00:00+02:00": 2.0}),
    ("America/New_York", "2026-11-01",
     [("2026-11-01T01:30:00-04:00", 1.0), ("2026-11-01T01:30:00-05:00", 2.0)], 25,
     {"2026-11-01T01:00:00-04:00": 1.0, "2026-11-01T01:00:00-05:00": 2.0}),
    ("America/New_York", "2026-03-08",
     [("2026-03-08T01:59:00-05:00", 1.0), ("2026-03-08T03:00:00-04:00", 2.0)], 23,
     {"2026-03-08T01:00:00-05:00": 1.0, "2026-03-08T03:00:00-04:00": 2.0}),
    # +10:30 back to +09:30 at 03:00; the hours are the clock's, half past UTC's.
    ("Australia/Adelaide", "2026-04-05",
     [("2026-04-05T02:30:00+10:30", 1.0), ("2026-04-05T02:30:00+09:30", 2.0)], 25,
     {"2026-04-05T02:00:00+10:30": 1.0, "2026-04-05T02:00:00+09:30": 2.0}),
    ("Australia/Adelaide", "2026-10-04",
     [("2026-10-04T01:30:00+09:30", 1.0), ("2026-10-04T03:30:00+10:30", 2.0)], 23,
     {"2026-10-04T01:00:00+09:30": 1.0, "2026-10-04T03:00:00+10:30": 2.0}),
    # +11:00 back to +10:30 at 02:00: 01:30-02:00 passes twice; its second pass is a window
    # of half an hour. 01:15+11:00 is in the first pass's hour, which starts at 01:00.
    ("Australia/Lord_Howe", "2026-04-05",
     [("2026-04-05T01:15:00+11:00", 1.0), ("2026-04-05T01:45:00+11:00", 2.0),
      ("2026-04-05T01:45:00+10:30", 4.0)], 25,
     {"2026-04-05T01:00:00+11:00": 3.0, "2026-04-05T01:30:00+10:30": 4.0}),
    # +10:30 forward to +11:00 at 02:00: the hour after the change starts at 02:30.
    ("Australia/Lord_Howe", "2026-10-04",
     [("2026-10-04T01:45:00+10:30", 1.0), ("2026-10-04T02:45:00+11:00", 2.0)], 24,
     {"2026-10-04T01:00:00+10:30": 1.0, "2026-10-04T02:30:00+11:00": 2.0}),
]  # fmt: skip


def _city(client: CityClient, slug: str, zone: str) -> str:
    """A city of its own in `zone`, with a site `lab`; returns the site's source."""
    made = client.post(
        "/v1/cities", json={"slug": slug, "name": slug, "country": "XX", "timezone": zone}
    )
    assert made.status_code == 201, made.text
    site = client.post(f"/v1/cities/{slug}/sites", json={"slug": "lab", "name": "Lab"})
    assert site.status_code == 201, site.text
    return f"/{slug}/lab"


def _points(client: CityClient, slug: str, day: str, name: str, interval: str) -> list[Any]:
    r = client.get(
        f"/v1/cities/{slug}/metrics",
        params={"names": name, "from": day, "to": day, "interval": interval},
    )
    assert r.status_code == 200, r.text
    [series] = r.json()["series"]
    points: list[Any] = series["points"]
    return points


@pytest.mark.parametrize(("zone", "day", "events", "count", "windows"), CHANGES)
def test_hour_windows_are_real_hours_labelled_with_their_offset(
    db_url: str,
    zone: str,
    day: str,
    events: list[tuple[str, float]],
    count: int,
    windows: dict[str, float],
) -> None:
    with city_client(db_url) as client:
        source = _city(client, "clocks", zone)
        ingest(client, [event([flow(quantity=kg)], source=source, time=t) for t, kg in events])
        hours = _points(client, "clocks", day, "input_kg", "hour")
        # Every window once, in order, each starting when the one before it ended.
        starts = [p["start"] for p in hours]
        assert len(starts) == count == len(set(starts))
        assert starts == sorted(starts, key=lambda s: _instant(s))
        assert {p["start"]: p["value"] for p in hours if p["value"] is not None} == windows
        # The day holds them all: a day stays the local calendar day.
        [whole] = _points(client, "clocks", day, "input_kg", "day")
        assert (whole["start"], whole["value"]) == (day, sum(kg for _, kg in events))


def _instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# (zone, day, hours in the day)
LENGTHS = [
    ("Europe/Madrid", "2026-10-25", 25.0),
    ("Europe/Madrid", "2026-03-29", 23.0),
    ("Australia/Adelaide", "2026-04-05", 25.0),
    ("Australia/Lord_Howe", "2026-04-05", 24.5),
    ("Australia/Lord_Howe", "2026-10-04", 23.5),
    ("Asia/Kolkata", "2026-10-25", 24.0),
]


@pytest.mark.parametrize(("zone", "day", "length"), LENGTHS)
def test_utilization_divides_by_the_true_length_of_its_window(
    db_url: str, zone: str, day: str, length: float
) -> None:
    with city_client(db_url) as client:
        source = _city(client, "clocks", zone)
        # One machine used for a fifth of the day: 0.2 whatever the day's length.
        used = flow("use", "machine_hours", length / 5, "h", ring="site")
        ingest(client, [event([used], source=source, time=f"{day}T12:00:00Z")])
        [whole] = _points(client, "clocks", day, "utilization", "day")
        assert whole["value"] == pytest.approx(0.2)


def test_a_half_hour_window_is_half_an_hour_of_utilization(db_url: str) -> None:
    # Lord Howe, 2026-04-05: 01:30-02:00+10:30 is the second pass of half an hour. A quarter
    # of an hour of use in it is half of it: 0.25 / 0.5 = 0.5 (not 0.25 / 1).
    with city_client(db_url) as client:
        source = _city(client, "clocks", "Australia/Lord_Howe")
        used = flow("use", "machine_hours", 0.25, "h", ring="site")
        ingest(client, [event([used], source=source, time="2026-04-05T01:40:00+10:30")])
        hours = _points(client, "clocks", "2026-04-05", "utilization", "hour")
        found = {p["start"]: p["value"] for p in hours if p["value"] is not None}
        assert found == {"2026-04-05T01:30:00+10:30": pytest.approx(0.5)}


def test_exports_and_the_event_view_tell_the_two_passes_apart(db_url: str) -> None:
    with city_client(db_url) as client:
        source = _city(client, "clocks", "Europe/Madrid")
        ingest(
            client,
            [
                event([flow(quantity=1.0)], id="first", source=source,
                      time="2026-10-25T02:30:00+02:00"),
                event([flow(quantity=2.0)], id="second", source=source,
                      time="2026-10-25T02:30:00+01:00"),
            ],
        )  # fmt: skip
        for id, start, end in [
            ("first", "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"),
            ("second", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"),
        ]:
            view = client.get(f"/v1/events/clocks/lab/{id}")
            assert view.status_code == 200, view.text
            [hour] = [w for w in view.json()["windows"] if w["interval"] == "hour"]
            assert (hour["start"], hour["end"]) == (start, end)
        params = {"names": "input_kg", "from": "2026-10-25", "to": "2026-10-25",
                  "interval": "hour"}  # fmt: skip
        r = client.get("/v1/cities/clocks/metrics", params={**params, "format": "csv"})
        assert r.status_code == 200, r.text
        rows = [row for row in csv.DictReader(io.StringIO(r.text)) if row["value"]]
        assert [(row["start"], row["value"]) for row in rows] == [
            ("2026-10-25T02:00:00+02:00", "1.0"),
            ("2026-10-25T02:00:00+01:00", "2.0"),
        ]
        r = client.get("/v1/cities/clocks/ngsi-ld", params=params)
        assert r.status_code == 200, r.text
        entities = {e["id"]: e for e in r.json()}
        key = "urn:ngsi-ld:KeyPerformanceIndicator:clocks:input_kg:2026-10-25T02:00"
        assert {i: e["kpiValue"]["observedAt"] for i, e in entities.items()} == {
            f"{key}+02:00": "2026-10-25T00:00:00Z",
            f"{key}+01:00": "2026-10-25T01:00:00Z",
        }
