"""`fabcity events import FILE` and `fabcity events template`: a lab's spreadsheet from the
command line, row by row, and what an operator sees when the file is wrong."""

from __future__ import annotations

import json
from pathlib import Path

from fabcity.core.db import make_engine, make_sessionmaker
from tests.services.cli.runner import assert_refused, fabcity
from tests.support.city import CITY, OTHER_SITE, SITE, register


def test_a_sheet_is_imported_row_by_row_and_again_without_doubles(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    register(make_sessionmaker(engine))
    engine.dispose()
    sheet = tmp_path / "november.csv"
    sheet.write_text(
        "time,site,action,resource,quantity,unit,ring,fate,event\n"
        f"2026-03-10 10:00,{SITE},consume,wood,2,kg,region,,job-9\n"
        f"2026-03-10 10:00,{SITE},discard,wood,0.5,kg,city,burnt,job-9\n"
        f"2026-03-10,{OTHER_SITE},consume,wood,1,kg,city,,\n"
    )
    done = fabcity(sqlite_url, "events", "import", str(sheet), "--city", CITY, "--json")
    assert done.returncode == 1, done.stderr  # a row was refused
    rows = {r["row"]: r for r in json.loads(done.stdout)["rows"]}
    # The bad fate is row 3's; row 2 falls with it (one event) and says which row to fix.
    assert rows[3]["outcome"] == "refused" and rows[3]["reason"].startswith("fate")
    assert rows[2]["outcome"] == "refused" and "row 3" in rows[2]["reason"]
    assert rows[4]["outcome"] == "accepted"
    again = fabcity(sqlite_url, "events", "import", str(sheet), "--city", CITY)
    assert "0 rows stored, 1 stored before, 2 refused" in again.stdout
    assert "Traceback" not in again.stderr


def test_the_template_written_is_read_back(sqlite_url: str, tmp_path: Path) -> None:
    for name in ("flows.csv", "flows.xlsx"):
        done = fabcity(sqlite_url, "events", "template", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        assert (tmp_path / name).stat().st_size > 100
    assert_refused(
        fabcity(sqlite_url, "events", "template", str(tmp_path / "x.pdf")), 2, ".csv or .xlsx"
    )


def test_a_wrong_file_or_city_is_one_clear_line(sqlite_url: str, tmp_path: Path) -> None:
    assert_refused(
        fabcity(sqlite_url, "events", "import", str(tmp_path / "none.csv"), "--city", CITY),
        2,
        "is not a file",
    )
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.7")
    assert_refused(fabcity(sqlite_url, "events", "import", str(pdf), "--city", CITY), 2, "CSV")
    sheet = tmp_path / "s.csv"
    sheet.write_text("time,site,action,resource,quantity,unit,ring\n")
    assert_refused(
        fabcity(sqlite_url, "events", "import", str(sheet), "--city", "atlantis"), 1, "atlantis"
    )
