"""A lab's spreadsheet (CSV or XLSX) as events: one row a flow, read in the city's time zone.

Many labs keep their records in a spreadsheet. The template's columns are `COLUMNS`; a row is
one flow (`action resource quantity unit ring`, and what the flow may carry) at a `site` (and
`device`), at a `time`. Rows with the same `event` make one event (a job: its inputs, what it
made and its offcuts); a row without one is an event of its own.

Nothing is counted twice when a lab uploads its sheet again, with rows added: an event's id is
its `event` value, or else the digest of the row's content and of how many identical rows came
before it in the sheet (so two identical deliveries on one day stay two, and a row inserted
above does not rename the rows below).

Each row's fate is reported by its row number, as the lab sees it in its spreadsheet program.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from fabcity.core.errors import Invalid, PayloadTooLarge
from fabcity.ingest.bounds import Bounds
from fabcity.ingest.service import ingest
from fabcity.registry import entries

COLUMNS = (
    "time",
    "site",
    "device",
    "action",
    "resource",
    "quantity",
    "unit",
    "ring",
    "material",
    "fate",
    "recycled",
    "design",
    "job",
    "event",
)
REQUIRED = ("time", "site", "action", "resource", "quantity", "unit", "ring")
# What the template shows under its header: a job at the lab, and materials received.
EXAMPLES = (
    ("2026-11-27 10:30", "fablab-centre", "laser-1", "consume", "wood", "2.4", "kg", "region",
     "birch plywood", "", "", "", "job-27-1", "job-27-1"),
    ("2026-11-27 10:30", "fablab-centre", "laser-1", "produce", "part", "3", "count", "city",
     "", "", "", "https://example.org/stool/okh.toml", "job-27-1", "job-27-1"),
    ("2026-11-27 10:30", "fablab-centre", "laser-1", "discard", "wood", "0.4", "kg", "city",
     "", "compost", "", "", "job-27-1", "job-27-1"),
    ("2026-11-28", "fablab-centre", "", "modify", "furniture", "2", "count", "city",
     "", "", "", "", "", ""),
)  # fmt: skip

MEDIA_CSV = "text/csv"
MEDIA_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# An XLSX file is a zip: its parts are unpacked to be read. A few kilobytes can unpack to
# gigabytes (a zip bomb); a real sheet of the largest batch we take unpacks to a few MB.
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
_FLAG = {"yes": True, "y": True, "true": True, "1": True, "x": True, "sí": True, "si": True,
         "no": False, "n": False, "false": False, "0": False}  # fmt: skip
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z)?)?$")


@dataclass(frozen=True)
class Row:
    number: int  # as the spreadsheet program numbers it: the header is row 1
    values: dict[str, Any]


@dataclass
class RowOutcome:
    row: int
    outcome: str  # accepted, duplicate, refused
    event: str | None = None
    reason: str | None = None


@dataclass
class Report:
    rows: list[RowOutcome] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.rows if r.outcome == outcome)


def kind_of(media_type: str, name: str = "") -> str:
    """`csv` or `xlsx`, from a media type or else a file name."""
    media_type = media_type.split(";")[0].strip().lower()
    if media_type in (MEDIA_CSV, "application/csv", "text/plain") or name.lower().endswith(".csv"):
        return "csv"
    if media_type == MEDIA_XLSX or name.lower().endswith(".xlsx"):
        return "xlsx"
    raise Invalid(
        f"a spreadsheet is CSV ({MEDIA_CSV}) or XLSX ({MEDIA_XLSX}), not {media_type or name!r}"
    )


def read(data: bytes, kind: str, max_rows: int) -> list[Row]:
    """The rows of a sheet with a header row naming the template's columns (in any order;
    other columns are ignored). A whole-file problem raises `Invalid`."""
    table = _xlsx(data) if kind == "xlsx" else _csv(data)
    header = next(table, None)
    if header is None:
        raise Invalid("the spreadsheet is empty: its first row names the columns")
    names = [str(h or "").strip().lower() for h in header]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise Invalid(
            f"the first row must name the columns; missing: {', '.join(missing)} "
            f"(the template has {', '.join(COLUMNS)})"
        )
    at = {c: names.index(c) for c in COLUMNS if c in names}
    rows: list[Row] = []
    for number, cells in enumerate(table, start=2):
        values = {c: _cell(cells, i) for c, i in at.items()}
        if all(v is None for v in values.values()):
            continue  # a blank line
        if len(rows) == max_rows:
            raise PayloadTooLarge(f"a spreadsheet holds at most {max_rows} rows: split it")
        rows.append(Row(number, values))
    return rows


def _cell(cells: Sequence[Any], i: int) -> Any:
    value = cells[i] if i < len(cells) else None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _csv(data: bytes) -> Iterator[Sequence[Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # What spreadsheet programs save as "CSV" on many desktops.
        text = data.decode("cp1252", errors="replace")
    if "\x00" in text:
        raise Invalid("a CSV file holds text: this one holds NUL bytes (is it an XLSX?)")
    first = text.split("\n", 1)[0]
    # Where a comma is the decimal mark, spreadsheets separate cells with semicolons.
    delimiter = max((";", ",", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        yield from reader
    except csv.Error as exc:
        raise Invalid(f"the CSV file cannot be read: {exc}") from exc


def _xlsx(data: bytes) -> Iterator[Sequence[Any]]:
    # lazy: openpyxl is read only here (~80 ms to import)
    import openpyxl

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise Invalid("an XLSX file is a zip archive: this one is not") from exc
    if unpacked > MAX_UNPACKED_BYTES:
        raise PayloadTooLarge(
            f"the XLSX file unpacks to {unpacked:,} bytes, over {MAX_UNPACKED_BYTES:,}: split it"
        )
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a broken workbook
        raise Invalid(f"the XLSX file cannot be read: {type(exc).__name__}") from exc
    try:
        sheet = book.worksheets[0] if book.worksheets else None
        if sheet is None:
            raise Invalid("the XLSX file has no sheet")
        yield from sheet.iter_rows(values_only=True)
    finally:
        book.close()


def events(
    rows: Iterable[Row], city: str, tz: ZoneInfo
) -> tuple[list[dict[str, Any]], list[list[int]], list[RowOutcome]]:
    """The events of `rows`, the rows behind each, and the rows refused before any event."""
    refused: list[RowOutcome] = []
    grouped: dict[str, list[tuple[Row, str, datetime, dict[str, Any]]]] = {}
    seen: Counter[str] = Counter()
    for row in rows:
        try:
            source, when, flow = _flow(row, city, tz)
        except ValueError as exc:
            refused.append(RowOutcome(row.number, "refused", reason=str(exc)))
            continue
        named = row.values.get("event")
        if named is not None:
            key = f"sheet-{_text(named)}"
        else:
            content = repr(sorted((k, str(v)) for k, v in row.values.items() if v is not None))
            seen[content] += 1
            digest = hashlib.sha256(f"{content}#{seen[content]}".encode()).hexdigest()
            key = f"sheet-{digest[:32]}"
        grouped.setdefault(key, []).append((row, source, when, flow))
    out: list[dict[str, Any]] = []
    behind: list[list[int]] = []
    for key, members in grouped.items():
        numbers = [row.number for row, *_ in members]
        places = {(source, when) for _, source, when, _ in members}
        if len(places) > 1:
            reason = "the rows of one event must share its site, device and time"
            refused.extend(RowOutcome(n, "refused", key, reason) for n in numbers)
            continue
        ((source, when),) = places
        out.append(
            {
                "specversion": "1.0",
                "id": key,
                "source": source,
                "type": "fabcity.flow",
                "time": when.isoformat(),
                "data": [flow for *_, flow in members],
            }
        )
        behind.append(numbers)
    return out, behind, refused


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a number typed in a cell: "12", not "12.0"
    return str(value)


def _flow(row: Row, city: str, tz: ZoneInfo) -> tuple[str, datetime, dict[str, Any]]:
    v = row.values
    empty = [c for c in REQUIRED if v.get(c) is None]
    if empty:
        raise ValueError(f"empty: {', '.join(empty)}")
    source = f"/{city}/{_text(v['site'])}"
    if v.get("device") is not None:
        source += f"/{_text(v['device'])}"
    flow: dict[str, Any] = {
        "action": _text(v["action"]).lower(),
        "resource": _text(v["resource"]),
        "quantity": _quantity(v["quantity"]),
        "unit": _text(v["unit"]),
        "ring": _text(v["ring"]).lower(),
    }
    for name in ("material", "fate", "design", "job"):
        if v.get(name) is not None:
            flow[name] = _text(v[name])
    if v.get("recycled") is not None:
        said = _text(v["recycled"]).lower()
        if said not in _FLAG:
            raise ValueError(f"recycled: write yes or no, not {said!r}")
        flow["recycled"] = _FLAG[said]
    return source, _time(v["time"], tz), flow


def _quantity(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("quantity: a number, not a yes/no")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).replace(" ", "").replace("\u00a0", "")
    if "," in text and "." not in text and text.count(",") == 1:
        text = text.replace(",", ".")  # a decimal comma: 2,40
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"quantity: a number like 2.40, not {str(value)[:40]!r}") from None


def _time(value: Any, tz: ZoneInfo) -> datetime:
    """A cell's time: a date is noon of that day, a time without an offset is the city's."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime.combine(value, time(12))
    else:
        text = str(value).strip()
        if not _ISO.match(text):
            raise ValueError(
                f"time: write 2026-11-28 or 2026-11-28 14:30 (the city's time), not {text[:40]!r}"
            )
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"time: {text[:40]!r} is not a date") from None
        if len(text) == 10:
            when = when.replace(hour=12)
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


_FLOW_ERROR = re.compile(r"data\.(\d+)\.?(.*)$", re.DOTALL)


def _refused_rows(numbers: list[int], event: str, reason: str) -> list[RowOutcome]:
    """An event's refusal, told to its rows: a fault in one flow (`data.N.field: …`) belongs
    to the row that flow came from; the event's other rows fall with it (an event is stored
    whole) and say which row to fix."""
    found = _FLOW_ERROR.match(reason)
    if found is None or int(found.group(1)) >= len(numbers):
        return [RowOutcome(n, "refused", event, reason) for n in numbers]
    culprit = numbers[int(found.group(1))]
    out = [RowOutcome(culprit, "refused", event, found.group(2) or reason)]
    out += [
        RowOutcome(n, "refused", event, f"row {culprit} of the same event was refused")
        for n in numbers
        if n != culprit
    ]
    return out


def template_csv() -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows(EXAMPLES)
    return buffer.getvalue().encode()


def template_xlsx() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "flows"
    sheet.append(list(COLUMNS))
    for example in EXAMPLES:
        sheet.append([_typed(c, cell) for c, cell in zip(COLUMNS, example, strict=True)])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _typed(column: str, cell: str) -> Any:
    if cell == "":
        return None
    if column == "quantity":
        return float(cell)
    if column == "time":
        return datetime.fromisoformat(cell) if " " in cell else date.fromisoformat(cell)
    return cell


def import_sheet(
    session: Session,
    city: str,
    data: bytes,
    kind: str,
    max_rows: int,
    scope: str | None = None,
    bounds: Bounds | None = None,
) -> tuple[Report, int]:
    """Store a sheet's events through the one ingest path (a key's scope applies per event);
    report each row. Also returns how many windows were marked for recompute."""
    tz = entries.zone(entries.get_city(session, city).timezone)
    rows = read(data, kind, max_rows)
    items, behind, refused = events(rows, city, tz)
    report = Report(list(refused))
    outcome = ingest(session, items, scope=scope, bounds=bounds)
    reasons = {r.index: r.error for r in outcome.result.rejected}
    stored = set(outcome.stored_indexes)
    for index, numbers in enumerate(behind):
        event = items[index]["id"]
        if index in reasons:
            report.rows.extend(_refused_rows(numbers, event, reasons[index]))
        elif index in stored:
            report.rows.extend(RowOutcome(n, "accepted", event) for n in numbers)
        else:
            report.rows.extend(RowOutcome(n, "duplicate", event) for n in numbers)
    report.rows.sort(key=lambda r: r.row)
    return report, outcome.windows_marked
