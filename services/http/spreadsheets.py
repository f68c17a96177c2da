"""Labs' spreadsheets: `POST /v1/events/import` stores a CSV or XLSX sheet's rows as events,
through the same ingest path as `POST /v1/events`, and reports each row; `GET
/v1/events/template` is the sheet to fill in (fabcity.ingest.spreadsheets)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response

from fabcity.core.db import transaction
from fabcity.ingest import spreadsheets
from fabcity.ingest.bounds import Bounds
from schemas.api import SheetReport, SheetRow
from services.http.dependencies import AppStateDep, PrincipalDep, RawBody, Sent
from services.http.problems import problem

router = APIRouter(prefix="/v1", tags=["ingest"])


@router.get(
    "/events/template",
    response_class=Response,
    responses={
        200: {
            "content": {spreadsheets.MEDIA_CSV: {}, spreadsheets.MEDIA_XLSX: {}},
            "description": "The spreadsheet to fill in: its columns and example rows.",
        }
    },
)
def sheet_template(format: Literal["csv", "xlsx"] = "xlsx") -> Response:
    """The template a lab fills in: one row a flow; rows with the same `event` are one event."""
    if format == "csv":
        body, media = spreadsheets.template_csv(), spreadsheets.MEDIA_CSV
    else:
        body, media = spreadsheets.template_xlsx(), spreadsheets.MEDIA_XLSX
    name = f"fabcity-flows.{format}"
    return Response(
        body, media_type=media, headers={"content-disposition": f'attachment; filename="{name}"'}
    )


@router.post(
    "/events/import",
    response_model=SheetReport,
    status_code=202,
    responses={
        413: {"description": "Body, rows or unpacked XLSX too large"},
        415: {"description": "Neither CSV nor XLSX"},
        422: {"description": "The sheet cannot be read, or every row was refused"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                spreadsheets.MEDIA_CSV: {"schema": {"type": "string"}},
                spreadsheets.MEDIA_XLSX: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
def import_sheet(
    sent: Annotated[Sent, Depends(RawBody())],
    state: AppStateDep,
    who: PrincipalDep,
    city: Annotated[str, Query(max_length=64, description="The city the sheet's sites are in.")],
) -> JSONResponse:
    """Store a spreadsheet's rows (CSV or XLSX, in the template's columns) as events, and say
    what became of each row. Uploading the same sheet again, with rows added, stores the new
    rows only."""
    kind = spreadsheets.kind_of(sent.media_type)
    with transaction(state.factory) as session:
        report, marked = spreadsheets.import_sheet(
            session,
            city,
            sent.body,
            kind,
            state.settings.max_batch_events,
            who.source_scope,
            Bounds.of(state.settings),
        )
    if marked:
        state.dispatcher.nudge()
    body = SheetReport(
        accepted=report.count("accepted"),
        duplicates=report.count("duplicate"),
        refused=report.count("refused"),
        rows=[
            SheetRow(row=r.row, outcome=r.outcome, event=r.event, reason=r.reason)
            for r in report.rows
        ],
    )
    if body.refused and not body.accepted and not body.duplicates:
        return problem(
            422,
            "Every row was refused",
            "; ".join(f"row {r.row}: {r.reason}" for r in body.rows[:20]),
            "invalid-event",
            rows=[r.model_dump() for r in body.rows],
        )
    return JSONResponse(body.model_dump(), status_code=202)
