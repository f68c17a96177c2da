"""`fabcity metrics rebuild`: the city metrics recomputed from what is stored."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn

from services.cli.common import console, database, refused

app = typer.Typer(help="The city metrics: recompute them from what is stored.")


@app.command("rebuild")
def metrics_rebuild(
    city: Annotated[str | None, typer.Option(help="Only this city (slug).")] = None,
    from_events: Annotated[
        bool,
        typer.Option(
            "--from-events",
            help="Also derive every flow again from the stored events; the cities' ingest "
            "waits meanwhile (HTTP answers 503 busy, MQTT batches stay unacknowledged).",
        ),
    ] = False,
) -> None:
    """Recompute every rollup from the stored flows (and, with --from-events, the flows from
    the stored events). Gives exactly what incremental processing gave."""
    # lazy: the rebuild and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.core.db import transaction
    from fabcity.ingest.rebuild import rebuild
    from fabcity.registry import entries

    with database() as factory:
        city_id = None
        if city is not None:
            with refused(), transaction(factory) as s:
                city_id = entries.get_city(s, city).id
        columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            tasks: dict[str, TaskID] = {}

            def advance(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=total)
                progress.update(tasks[stage], completed=done, total=total)

            report = rebuild(factory, city_id, from_events, advance)
    console.print(
        f"rebuilt {report.windows} windows"
        + (f" from {report.events} events ({report.flows} flows)" if from_events else "")
        + (f"; {report.skipped} events no longer derive" if report.skipped else "")
    )
