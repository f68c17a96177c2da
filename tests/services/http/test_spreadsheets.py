"""A lab's spreadsheet through POST /v1/events/import: every row's fate by its row number,
nothing counted twice on a second upload, and the sheet an attacker would send refused as a
4xx. Expected figures are summed by hand from the rows in each test."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.ingest import spreadsheets
from fabcity.registry import keys
from tests.support.api import city_client
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE
from workers import jobs

MakeClient = Callable[..., TestClient]
CSV = {"content-type": "text/csv"}
XLSX = {"content-type": spreadsheets.MEDIA_XLSX}
HEADER = "time,site,device,action,resource,quantity,unit,ring,material,fate,recycled,event\n"


def upload(client: TestClient, body: bytes, headers: dict[str, str], city: str = CITY) -> Any:
    return client.post("/v1/events/import", params={"city": city}, content=body, headers=headers)


def day_value(client: TestClient, metric: str, day: str) -> float | None:
    response = client.get(
        f"/v1/cities/{CITY}/metrics",
        params={"from": day, "to": day, "interval": "day", "names": metric},
    )
    assert response.status_code == 200, response.text
    value: float | None = response.json()["series"][0]["points"][0]["value"]
    return value


def outcomes(report: dict[str, Any]) -> dict[int, tuple[str, str | None]]:
    return {r["row"]: (r["outcome"], r["reason"]) for r in report["rows"]}


def test_good_and_bad_rows_are_reported_by_row_and_a_second_upload_adds_only_new_rows(
    db_url: str,
) -> None:
    sheet = (
        HEADER
        # row 2–4: one job (event job-1): 2.5 kg of wood in, 3 parts, 0.5 kg composted
        + f"2026-03-10 10:30,{SITE},{DEVICE},consume,wood,2.5,kg,region,,,,job-1\n"
        + f"2026-03-10 10:30,{SITE},{DEVICE},produce,part,3,count,city,,,,job-1\n"
        + f"2026-03-10 10:30,{SITE},{DEVICE},discard,wood,0.5,kg,city,,compost,,job-1\n"
        # row 5: a quantity nobody can read
        + f"2026-03-10,{SITE},,consume,wood,lots,kg,city,,,,\n"
        # row 6: a date in a form that is ambiguous (day/month or month/day)
        + f"10/03/2026,{SITE},,consume,wood,1,kg,city,,,,\n"
        # row 7: an action the vocabulary does not have: refused by the ingest path
        + f"2026-03-10,{SITE},,borrow,wood,1,kg,city,,,,\n"
        # row 8: 1 kg of recycled filament from the city, a date alone (noon local)
        + f"2026-03-10,{OTHER_SITE},,consume,filament,1000,g,city,,,yes,\n"
        # row 9: blank; skipped, not refused
        + ",,,,,,,,,,,\n"
    )
    with city_client(db_url) as client:
        first = upload(client, sheet.encode(), CSV)
        assert first.status_code == 202, first.text
        report = first.json()
        rows = outcomes(report)
        assert sorted(rows) == [2, 3, 4, 5, 6, 7, 8]
        assert [rows[n][0] for n in (2, 3, 4, 8)] == ["accepted"] * 4
        assert rows[5][0] == rows[6][0] == rows[7][0] == "refused"
        assert "quantity" in (rows[5][1] or "")
        assert "2026-11-28" in (rows[6][1] or "")  # the reason shows the form to use
        assert (rows[7][1] or "").startswith("action: Input should be")  # not "data.0.action"
        assert (report["accepted"], report["duplicates"], report["refused"]) == (4, 0, 3)
        jobs.recompute_dirty_windows(client.factory, 100)
        # inputs: 2.5 kg wood + 1 kg filament = 3.5 kg
        assert day_value(client, "input_kg", "2026-03-10") == pytest.approx(3.5)
        # the recycled kilogram of 3.5: 0.2857…
        assert day_value(client, "recycled_input_share", "2026-03-10") == pytest.approx(1 / 3.5)

        # The lab fixes row 5 (now 1,5 kg written with a decimal point) and adds a row on top.
        fixed = sheet.replace(",lots,", ",1.5,").replace(
            HEADER, HEADER + f"2026-03-10 18:00,{SITE},,consume,wood,0.25,kg,city,,,,\n"
        )
        second = upload(client, fixed.encode(), CSV).json()
        rows = outcomes(second)
        assert rows[2][0] == "accepted"  # the new row
        assert [rows[n][0] for n in (3, 4, 5, 9)] == ["duplicate"] * 4  # stored before
        assert rows[6][0] == "accepted"  # the fixed row
        jobs.recompute_dirty_windows(client.factory, 100)
        # 3.5 + 0.25 + 1.5 = 5.25: the rows stored before count once
        assert day_value(client, "input_kg", "2026-03-10") == pytest.approx(5.25)


def test_identical_rows_are_two_deliveries_not_one(db_url: str) -> None:
    row = f"2026-03-11,{SITE},,consume,wood,2,kg,region,,,,\n"
    with city_client(db_url) as client:
        report = upload(client, (HEADER + row + row).encode(), CSV).json()
        assert report["accepted"] == 2
        assert upload(client, (HEADER + row + row).encode(), CSV).json()["duplicates"] == 2
        jobs.recompute_dirty_windows(client.factory, 100)
        assert day_value(client, "input_kg", "2026-03-11") == pytest.approx(4.0)


def test_a_semicolon_sheet_with_decimal_commas_as_spreadsheets_save_it(db_url: str) -> None:
    """What a spreadsheet program in a comma-decimal locale saves as CSV: a byte-order mark,
    semicolons, decimal commas, CRLF line ends."""
    text = (
        "time;site;action;resource;quantity;unit;ring\r\n"
        f"2026-03-12 09:15;{SITE};consume;wood;2,40;kg;region\r\n"
    )
    with city_client(db_url) as client:
        report = upload(client, text.encode("utf-8-sig"), CSV).json()
        assert report["accepted"] == 1, report
        jobs.recompute_dirty_windows(client.factory, 100)
        assert day_value(client, "input_kg", "2026-03-12") == pytest.approx(2.4)


def test_an_xlsx_sheet_with_date_and_number_cells(db_url: str) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Time", "Site", "Action", "Resource", "Quantity", "Unit", "Ring", "Notes"])
    sheet.append([datetime(2026, 3, 13, 11, 0), SITE, "consume", "wood", 1.75, "kg", "city", "x"])
    sheet.append([date(2026, 3, 13), SITE, "consume", "wood", 0.25, "kg", "city", None])
    buffer = io.BytesIO()
    book.save(buffer)
    with city_client(db_url) as client:
        report = upload(client, buffer.getvalue(), XLSX).json()
        assert report["accepted"] == 2, report
        jobs.recompute_dirty_windows(client.factory, 100)
        assert day_value(client, "input_kg", "2026-03-13") == pytest.approx(2.0)


@pytest.mark.parametrize("format", ["csv", "xlsx"])
def test_the_template_is_a_sheet_the_import_reads(make_client: MakeClient, format: str) -> None:
    client = make_client()
    template = client.get("/v1/events/template", params={"format": format})
    assert template.status_code == 200
    assert "attachment" in template.headers["content-disposition"]
    kind = spreadsheets.kind_of(template.headers["content-type"])
    rows = spreadsheets.read(template.content, kind, 100)
    assert [r.number for r in rows] == [2, 3, 4, 5]
    assert set(rows[0].values) == set(spreadsheets.COLUMNS)
    # The template's example sites are not the test city's: every row is read, then refused
    # for its site, each by its row number (the form works, the example is not data).
    report = upload(
        client, template.content, {"content-type": template.headers["content-type"]}
    ).json()
    assert [r["row"] for r in report["rows"]] == [2, 3, 4, 5]


# --- an attacker's sheets ----------------------------------------------------------------------


def zip_bomb() -> bytes:
    """An XLSX-shaped zip whose sheet unpacks to 200 MB of zeros from about 200 KB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("xl/worksheets/sheet1.xml", "w") as sheet:
            chunk = b"0" * (1 << 20)
            for _ in range(200):
                sheet.write(chunk)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (zip_bomb(), XLSX, 413, "unpacks to"),
        (b"time,site\n" + b"\x00" * 10, CSV, 422, "NUL"),
        (b"not a zip at all", XLSX, 422, "zip"),
        (b"", CSV, 422, "empty"),
        (b"when,where\n2026-03-10,lab\n", CSV, 422, "missing: time, site"),
        (b"%PDF-1.7", {"content-type": "application/pdf"}, 422, "CSV"),
        (
            HEADER.encode() + b"2026-03-10,lab,,consume,wood,1,kg,city,,,,\n" * 5001,
            CSV,
            413,
            "5000",
        ),
    ],
    ids=["zip-bomb", "nul", "not-zip", "empty", "no-header", "pdf", "too-many-rows"],
)
def test_a_hostile_sheet_is_a_4xx_problem(
    make_client: MakeClient, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    client = make_client()
    response = upload(client, body, headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert says in response.json()["detail"]


def test_a_site_key_imports_its_own_rows_only(
    make_client: MakeClient, sessions: sessionmaker[Session]
) -> None:
    client = make_client(auth="required")
    with transaction(sessions) as s:
        lab = {"Authorization": f"Bearer {keys.create(s, 'site', CITY, SITE).secret}"}
        keys.create(s, "admin")
    sheet = (
        HEADER
        + f"2026-03-10,{SITE},,consume,wood,1,kg,city,,,,\n"
        + f"2026-03-10,{OTHER_SITE},,consume,wood,1,kg,city,,,,\n"
    )
    report = upload(client, sheet.encode(), {**CSV, **lab})
    assert report.status_code == 202, report.text
    rows = outcomes(report.json())
    assert rows[2][0] == "accepted"
    assert rows[3][0] == "refused"
    assert OTHER_SITE in (rows[3][1] or "")
    # Another city's name in the query: refused before a row is read.
    elsewhere = upload(client, sheet.encode(), {**CSV, **lab}, city="atlantis")
    assert elsewhere.status_code == 403
    # Without a key: 401, even for a well-formed sheet.
    assert upload(client, sheet.encode(), CSV).status_code == 401
    # A planner reads; it does not write.
    with transaction(sessions) as s:
        planner = {"Authorization": f"Bearer {keys.create(s, 'planner', CITY).secret}"}
    assert upload(client, sheet.encode(), {**CSV, **planner}).status_code == 403


def test_an_unknown_city_is_a_404(make_client: MakeClient) -> None:
    response = upload(
        make_client(),
        (HEADER + "2026-03-10,lab,,consume,wood,1,kg,city,,,,\n").encode(),
        CSV,
        "atlantis",
    )
    assert response.status_code == 404
