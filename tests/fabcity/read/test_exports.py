"""CSV rows, NGSI-LD entities and cursors, without a database."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from fabcity.core import pagination
from fabcity.core.errors import Invalid
from fabcity.read import exports
from schemas import api


def test_csv_quotes_what_needs_it_and_leaves_null_empty() -> None:
    lines = list(exports.csv_lines([["a,b", None, 0, 'say "hi"'], ["x", 1.5, None, ""]]))
    assert lines == ['"a,b",,0,"say ""hi"""\r\n', "x,1.5,,\r\n"]
    assert list(csv.reader(io.StringIO("".join(lines)))) == [
        ["a,b", "", "0", 'say "hi"'], ["x", "1.5", "", ""],
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("start", "interval", "period", "span"),
    [
        (date(2026, 3, 9), "day", "2026-03-09", ("2026-03-09", "2026-03-09")),
        (date(2026, 3, 9), "week", "2026-W11", ("2026-03-09", "2026-03-15")),
        (date(2026, 2, 1), "month", "2026-02", ("2026-02-01", "2026-02-28")),
        (date(2026, 1, 1), "year", "2026", ("2026-01-01", "2026-12-31")),
        # the data model's period is of dates: an hour's is its local day
        (datetime(2026, 3, 9, 23, tzinfo=ZoneInfo("Europe/Madrid")), "hour",
         "2026-03-09T23:00+01:00", ("2026-03-09", "2026-03-09")),
    ],
)  # fmt: skip
def test_kpi_periods(start: date, interval: str, period: str, span: tuple[str, str]) -> None:
    assert exports.period_id(start, interval) == period  # type: ignore[arg-type]
    got = exports.calculation_period(start, interval)  # type: ignore[arg-type]
    assert (got["from"], got["to"]) == span


def response(value: float | None, unit_name: str = "input_kg") -> api.MetricsResponse:
    cover = api.Coverage(events=1, sites_reporting=1, sites_active=1)
    point = api.Point(start=date(2026, 3, 1), value=value, state="measured", coverage=cover)
    return api.MetricsResponse(
        city="bcn", interval="month", timezone="Europe/Madrid", group_by=None,
        series=[api.Series(name=unit_name, unit="kg", points=[point])],
    )  # fmt: skip


def test_a_kpi_entity_per_recorded_value_and_none_for_a_missing_one() -> None:
    (entity,) = exports.kpi_entities(response(12.5), "Barcelona")
    assert entity["id"] == "urn:ngsi-ld:KeyPerformanceIndicator:bcn:input_kg:2026-03"
    assert entity["type"] == "KeyPerformanceIndicator"
    # observed at the window's start, in UTC: midnight in Madrid on 1 March is 23:00 UTC
    observed = "2026-02-28T23:00:00Z"
    assert entity["kpiValue"] == {
        "type": "Property", "value": 12.5, "unitCode": "KGM", "observedAt": observed
    }  # fmt: skip
    assert entity["calculationPeriod"]["value"] == {"from": "2026-03-01", "to": "2026-03-31"}
    assert entity["organization"] == {"type": "Property", "value": "Barcelona"}
    assert entity["valueState"]["value"] == "measured"
    assert entity["@context"] == exports.NGSI_LD_CONTEXT
    assert exports.kpi_entities(response(None), "Barcelona") == []
    (simple,) = exports.kpi_entities(response(0.0), "Barcelona", key_values=True)
    assert simple["kpiValue"] == 0.0 and simple["calculationFrequency"] == "monthly"


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    key = ["lab-é", "printer/1"]
    assert pagination.decode(pagination.encode(key), 2) == key
    assert pagination.decode(None, 1) is None
    for bad in ("%%%", pagination.encode(["a"]), "bm90LWpzb24", pagination.encode([1, 2])):  # type: ignore[list-item]
        with pytest.raises(Invalid, match="cursor"):
            pagination.decode(bad, 2)
