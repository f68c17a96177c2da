"""`fabcity deadletters replay|list|show`: what could not become an event, kept with the reason."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fabcity.core.settings import get_settings
from schemas.access import DeadLetterFilter
from services.cli.common import JsonFlag, console, err, fail, print_json, refused, session

if TYPE_CHECKING:
    from fabcity.core.models import DeadLetter

app = typer.Typer(help="What could not become an event, kept with the reason.")


@app.command("replay")
def deadletters_replay(
    id_: Annotated[
        list[int] | None, typer.Option("--id", help="A dead letter to replay (repeatable).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Run dead letters through the routing and the ingest path again (say, after their
    device was registered); those that now go through are deleted, the others keep the
    reason they were refused with, and this replay's outcome apart."""
    # lazy: the ingest path and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.ingest.replay import replay

    if not id_ and not all_:
        fail("give --id N (repeatable) or --all", 2)
    settings = get_settings()
    with session() as s:
        result = replay(
            s,
            None if all_ else list(id_ or []),
            settings.mqtt_topic_prefix,
            settings.mqtt_max_payload_bytes,
        )
    cut = f" ({result.cut} cut short when kept: not replayable)" if result.cut else ""
    console.print(
        f"replayed: {result.ingested} went through ({result.events} new events), "
        f"{result.still_dead} still refused{cut}"
    )


def _last_replay(letter: DeadLetter) -> str:
    """A letter's replays, apart from the reason it was refused when it came."""
    if not letter.replays or letter.last_replay_at is None:
        return "—"
    when = letter.last_replay_at.isoformat(timespec="seconds")
    times = "once" if letter.replays == 1 else f"{letter.replays} times"
    return f"{times}, last {when}: {(letter.last_replay_outcome or '')[:200]}"


@app.command("list")
def deadletters_list(
    topic_prefix: Annotated[str | None, typer.Option(help="Only topics starting so.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only reasons containing this.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 100,
    after_id: Annotated[int, typer.Option(help="Start after this id (paging).")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Dead letters, oldest first: when, where from, and why they were refused."""
    # lazy: the ingest path and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.ingest import deadletters

    wanted = DeadLetterFilter(topic_prefix=topic_prefix, reason_contains=reason)
    with session() as s:
        letters = deadletters.list_letters(s, wanted, limit, after_id)
        if as_json:
            print_json([deadletters.described(d) for d in letters])
            return
    table = Table("id", "received", "topic", "bytes", "reason", "last replay")
    for d in letters:
        when = d.received_at.isoformat(timespec="seconds")
        size = f"{d.payload_size} (kept {len(d.payload)})" if d.truncated else str(d.payload_size)
        table.add_row(str(d.id), when, d.topic or "—", size, d.reason[:200], _last_replay(d))
    console.print(table)


@app.command("show")
def deadletters_show(
    letter_id: Annotated[int, typer.Argument(help="The letter's id (`fabcity deadletters list`).")],
) -> None:
    """One dead letter: its reason, then its payload exactly as received (or the part kept,
    when it was cut short), on stdout."""
    # lazy: the ingest path and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.ingest import deadletters

    with refused(), session() as s:
        letter = deadletters.get(s, letter_id)
    err.print(f"dead letter {letter.id}, {letter.channel} {letter.topic or ''}")
    err.print(f"received {letter.received_at.isoformat()}; {letter.payload_size} bytes")
    err.print(f"sha256: {letter.payload_sha256}")
    if letter.truncated:
        err.print(f"only the first {len(letter.payload)} bytes were kept: not replayable")
    err.print(f"reason: {letter.reason}")
    if letter.content_type or letter.properties:
        pairs = ", ".join(f"{n}={v}" for n, v in letter.properties or ())
        err.print(f"MQTT content type: {letter.content_type or '—'}; user properties: {pairs}")
    err.print(f"last replay: {_last_replay(letter)}")
    sys.stdout.buffer.write(letter.payload + b"\n")
