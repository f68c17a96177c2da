"""`fabcity keys create|list|revoke|rotate`: API keys, shown once and stored hashed."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from services.cli.common import JsonFlag, console, err, print_json, refused, session

if TYPE_CHECKING:
    from fabcity.registry.keys import Issued

app = typer.Typer(
    help="API keys (roles admin, site, device, planner): shown once, stored hashed.",
    no_args_is_help=True,
)


class KeyRole(StrEnum):
    admin = "admin"
    site = "site"
    device = "device"
    planner = "planner"


def _print_secret(issued: Issued, what: str) -> None:
    """The key alone on stdout (`KEY=$(fabcity keys create ...)`); the rest on stderr."""
    key = issued.key
    scope = "/".join(x for x in (key.city, key.site, key.device) if x) or "everything"
    err.print(f"{what} key {key.id} ({key.role}, {scope}). It is shown this once; keep it:")
    if key.role == "device":
        err.print(f"MQTT user name: {key.lookup}, password: the key (run `fabcity broker-config`)")
    typer.echo(issued.secret)


@app.command("create")
def keys_create(
    role: Annotated[KeyRole, typer.Option(help="What the key may do.")],
    city: Annotated[
        str | None, typer.Option(help="site, device: required; planner: one city.")
    ] = None,
    site: Annotated[str | None, typer.Option(help="site and device keys.")] = None,
    device: Annotated[str | None, typer.Option(help="device keys.")] = None,
    name: Annotated[str | None, typer.Option(help="Who holds it, for you.")] = None,
) -> None:
    """Make a key and print it (only it) on stdout. `--role admin` makes the first admin key."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.registry import keys

    with refused(), session() as s:
        issued = keys.create(s, role.value, city, site, device, name)
    _print_secret(issued, "new")


@app.command("list")
def keys_list(
    revoked: Annotated[bool, typer.Option(help="Also list revoked keys.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Every key: id, role, tenant, when made and revoked. Never the secrets."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.registry import keys
    from schemas.access import Key

    with session() as s:
        found = keys.list_keys(s, revoked)
        if as_json:
            print_json([Key.model_validate(k) for k in found])
            return
    table = Table("id", "lookup", "role", "city", "site", "device", "name", "created", "revoked")
    for k in found:
        table.add_row(
            str(k.id), k.lookup, k.role, k.city or "—", k.site or "—", k.device or "—",
            k.name or "", k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )  # fmt: skip
    console.print(table)


@app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (`fabcity keys list`).")],
) -> None:
    """Revoke a key. The API refuses it at once; the broker after `fabcity broker-config` and
    a restart of the broker (its dynamic-security file is read at start)."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.registry import keys

    with refused(), session() as s:
        role = keys.revoke(s, key_id).role
    err.print(f"key {key_id} revoked")
    if role == "device":
        err.print("run `fabcity broker-config` and restart the broker so that it refuses it too")


@app.command("rotate")
def keys_rotate(
    key_id: Annotated[int, typer.Argument(help="The key's id (`fabcity keys list`).")],
) -> None:
    """A new key with the same role and tenant, printed on stdout; the old one is revoked."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.registry import keys

    with refused(), session() as s:
        issued = keys.rotate(s, key_id)
    _print_secret(issued, f"key {key_id} revoked; its replacement is")
