"""`fabcity import okw|okh`: sites and designs from open-standard documents."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from fabcity.core.errors import Invalid
from services.cli.common import console, database, err, fail, refused

if TYPE_CHECKING:
    from schemas.standards import ImportResult

app = typer.Typer(
    help="Import open-standard documents: sites from OKW, designs from OKH.",
    no_args_is_help=True,
)

OKW_SUFFIXES = (".yml", ".yaml", ".json")
OKH_SUFFIXES = (".toml", ".yml", ".yaml", ".json")


def _documents(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """A file, or the files with these suffixes under a directory, in a stable order."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if path.is_file():
        return [path]
    fail(f"{path} is neither a file nor a directory", 2)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    )


class _Tally:
    """Created, updated and refused over every file of one import, reported at the end."""

    def __init__(self, problems: list[str]) -> None:
        self.created = self.updated = 0
        self.problems = problems
        self.matched: Counter[str] = Counter()
        self.notes: list[str] = []

    def add(self, result: ImportResult, file: Path, *, numbered: bool) -> None:
        """`numbered`: the file holds many records, so a refusal names its record too."""
        self.created += sum(1 for r in result.imported if r.created)
        self.updated += sum(1 for r in result.imported if not r.created)
        self.matched.update(r.matched for r in result.imported if r.matched)
        self.problems.extend(
            f"{file}#{r.index}: {r.error}" if numbered else f"{file}: {r.error}"
            for r in result.rejected
        )
        self.notes.extend(
            f"{file}#{r.index} ({r.id}): {note}" if numbered else f"{file}: {note}"
            for r in result.imported
            for note in r.notes
        )

    def report(self, what: str) -> None:
        console.print(
            f"{self.created} {what} created, {self.updated} updated, {len(self.problems)} refused"
        )
        if self.matched:
            # A site matched on its name (and location) rather than its id is worth a look:
            # say how many, so an operator can tell a re-import from a merge.
            console.print(
                "matched on "
                + ", ".join(f"{kind}: {n}" for kind, n in sorted(self.matched.items()))
            )
        for line in self.notes:
            err.print(f"[yellow]note:[/] {line}")
        for line in self.problems:
            err.print(f"[yellow]refused:[/] {line}")
        if self.problems:
            raise typer.Exit(1)


@app.command("okw")
def import_okw(
    path: Annotated[Path, typer.Argument(help="An OKW file (YAML or JSON) or a directory.")],
    city: Annotated[str, typer.Option(help="The city the sites belong to (its slug).")],
) -> None:
    """Sites from Open Know-Where facility records. A record imported before updates its site;
    each bad record is reported, the rest imported."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.core.db import transaction
    from fabcity.registry import entries, okw

    files = _documents(path, OKW_SUFFIXES)
    loaded: list[tuple[Path, list[object]]] = []
    problems: list[str] = []
    for file in files:
        try:
            media = "application/json" if file.suffix.lower() == ".json" else "application/yaml"
            loaded.append((file, okw.load_records(file.read_bytes(), media)))
        except Invalid as exc:
            problems.append(f"{file}: {exc.detail}")
    tally = _Tally(problems)
    with database() as factory:
        with refused(2), transaction(factory) as s:
            entries.get_city(s, city)
        progress = _progress()
        with progress:
            task = progress.add_task("OKW records", total=sum(len(r) for _, r in loaded))
            for file, records in loaded:
                with transaction(factory) as s:
                    result = okw.import_records(s, entries.get_city(s, city), records)
                tally.add(result, file, numbered=True)
                progress.advance(task, len(records))
    tally.report("sites")


@app.command("okh")
def import_okh(
    path: Annotated[Path, typer.Argument(help="An OKH manifest (TOML or YAML) or a directory.")],
    url: Annotated[
        str | None, typer.Option(help="The manifest's published URL (one file only).")
    ] = None,
    url_prefix: Annotated[
        str | None,
        typer.Option(
            help="Published URL of the directory: each manifest's URL is this plus its path "
            "below PATH. Without it, the manifest's own `manifest-url` is used."
        ),
    ] = None,
) -> None:
    """Designs from Open Know-How manifests (OKH v1 YAML, OKH-LOSH TOML). Flows name designs
    by their manifest URL; importing a URL again updates the design."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.core.db import transaction
    from fabcity.registry import designs

    files = _documents(path, OKH_SUFFIXES)
    if url is not None and len(files) != 1:
        fail("--url names one manifest; use --url-prefix for a directory", 2)
    base = path if path.is_dir() else path.parent
    tally = _Tally([])
    with database() as factory:
        progress = _progress()
        with progress:
            task = progress.add_task("OKH manifests", total=len(files))
            for file in files:
                where = url
                if url_prefix is not None:
                    where = url_prefix.rstrip("/") + "/" + file.relative_to(base).as_posix()
                with transaction(factory) as s:
                    result = designs.import_many(
                        s, [(file.suffix.lstrip("."), file.read_bytes(), where)]
                    )
                tally.add(result, file, numbered=False)
                progress.advance(task)
    tally.report("designs")
