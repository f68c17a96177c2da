"""`fabcity events import FILE`: a lab's spreadsheet (CSV or XLSX) as events, row by row;
`fabcity events template`: the sheet to fill in (fabcity.ingest.spreadsheets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from services.cli.common import console, database, err, fail, refused

app = typer.Typer(help="Events: a lab's spreadsheet in, the template out.", no_args_is_help=True)


@app.command("import")
def import_events(
    file: Annotated[Path, typer.Argument(help="A CSV or XLSX file in the template's columns.")],
    city: Annotated[str, typer.Option(help="The city the sheet's sites are in (its slug).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the row-by-row report as JSON.")
    ] = False,
) -> None:
    """Store a spreadsheet's rows as events and say what became of each row. Importing the
    same sheet again, with rows added, stores the new rows only. Exits 1 if a row was refused."""
    # lazy: the ingest path and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.core.db import transaction
    from fabcity.core.errors import FabcityError
    from fabcity.core.settings import get_settings
    from fabcity.ingest import spreadsheets

    if not file.is_file():
        fail(f"{file} is not a file", 2)
    try:
        kind = spreadsheets.kind_of("", file.name)
    except FabcityError as exc:
        fail(exc.detail, 2)
    with refused(), database() as factory, transaction(factory) as session:
        report, _ = spreadsheets.import_sheet(
            session, city, file.read_bytes(), kind, get_settings().max_batch_events
        )
    if as_json:
        rows = [r.__dict__ for r in report.rows]
        console.print_json(json.dumps({"city": city, "file": str(file), "rows": rows}))
    else:
        table = Table("row", "outcome", "event", "reason")
        for r in report.rows:
            colour = {"accepted": "green", "duplicate": "blue", "refused": "red"}[r.outcome]
            table.add_row(str(r.row), f"[{colour}]{r.outcome}[/]", r.event or "", r.reason or "")
        console.print(table)
        console.print(
            f"{report.count('accepted')} rows stored, {report.count('duplicate')} stored before, "
            f"{report.count('refused')} refused"
        )
    if report.count("refused"):
        if not as_json:
            err.print("[yellow]fix the refused rows and import the sheet again[/]")
        raise typer.Exit(1)


@app.command("template")
def template(
    out: Annotated[Path, typer.Argument(help="Where to write it: a .csv or .xlsx file.")],
) -> None:
    """Write the spreadsheet to fill in: its columns and example rows."""
    from fabcity.ingest import spreadsheets

    if out.suffix.lower() not in (".csv", ".xlsx"):
        fail(f"{out}: name a .csv or .xlsx file", 2)
    body = (
        spreadsheets.template_csv()
        if out.suffix.lower() == ".csv"
        else spreadsheets.template_xlsx()
    )
    out.write_bytes(body)
    console.print(f"wrote {out}")
