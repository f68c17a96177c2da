"""`fabcity cities|sites update|retire`, `fabcity cities changes` and `fabcity resources
add|list`: the registry corrected, retired and extended from the command line, the same
changes as the API's PATCH, DELETE and `POST /v1/resources`, logged with the actor `cli`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from schemas import api as api_schemas
from services.cli.common import (
    CityArg,
    JsonFlag,
    SiteArg,
    console,
    fail,
    print_json,
    refused,
    session,
)

ACTOR = "cli"

cities = typer.Typer(help="Cities: correct or retire one, and read what changed.")
sites = typer.Typer(help="Sites: correct or retire one.")
resources = typer.Typer(help="Resources: add one of the city's own, list them.")


def _patch(model: type[Any], given: dict[str, Any]) -> Any:
    """The PATCH body of the options given (an option left out is left as it is)."""
    chosen = {k: v for k, v in given.items() if v is not None}
    if not chosen:
        fail("nothing to change: give at least one option", 2)
    try:
        return model.model_validate(chosen)
    except ValueError as exc:
        fail(exc, 1)


def removal_line(removal: api_schemas.Removal) -> str:
    return f"{removal.outcome} {removal.entry}: {removal.detail}"


@cities.command("update")
def cities_update(
    city: CityArg,
    name: Annotated[str | None, typer.Option(help="Its name as people know it.")] = None,
    country: Annotated[str | None, typer.Option(help="ISO 3166-1 alpha-2.")] = None,
    timezone: Annotated[
        str | None,
        typer.Option(help="IANA zone; stored events move to their local hour in it."),
    ] = None,
    population: Annotated[
        int | None, typer.Option(help="Its people: per-person figures divide by it.")
    ] = None,
) -> None:
    """Correct a city; a new time zone sends the hours it moves to be recomputed."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.registry import changes, entries

    body = _patch(
        api_schemas.CityPatch,
        {"name": name, "country": country, "timezone": timezone, "population": population},
    )
    with refused(), session() as s:
        c = changes.update_city(s, entries.get_city(s, city), body, ACTOR)
        line = f"/{c.slug}: {c.name}, {c.country}, {c.timezone}, population {c.population}"
    console.print(line)


@cities.command("retire")
def cities_retire(city: CityArg) -> None:
    """Retire a city that events refer to (kept, refusing new events); delete one that none
    does."""
    from fabcity.registry import changes, entries

    with refused(), session() as s:
        removal = changes.remove_city(s, entries.get_city(s, city), ACTOR)
    console.print(removal_line(removal))


@cities.command("changes")
def cities_changes(city: CityArg) -> None:
    """Every change to the city's registry entries: who, when, before and after."""
    from fabcity.registry import changes, entries

    with refused(), session() as s:
        rows = changes.list_changes(s, entries.get_city(s, city), None, 100_000)
        table = Table("at", "entry", "action", "before", "after", "by", "hours")
        for r in rows:
            table.add_row(
                r.at.isoformat(timespec="seconds"), r.name, r.action, str(r.before),
                str(r.after), r.actor, str(r.windows),
            )  # fmt: skip
    console.print(table)


@sites.command("update")
def sites_update(
    city: CityArg,
    site: SiteArg,
    name: Annotated[str | None, typer.Option(help="Its name as people know it.")] = None,
    kind: Annotated[str | None, typer.Option(help="fablab, makerspace, ...")] = None,
    latitude: Annotated[float | None, typer.Option(help="WGS 84 degrees, -90 to 90.")] = None,
    longitude: Annotated[float | None, typer.Option(help="WGS 84 degrees, -180 to 180.")] = None,
) -> None:
    """Correct a site: its name, kind or coordinates."""
    from fabcity.registry import changes, entries

    body = _patch(
        api_schemas.SitePatch,
        {"name": name, "kind": kind, "latitude": latitude, "longitude": longitude},
    )
    with refused(), session() as s:
        c = entries.get_city(s, city)
        st = changes.update_site(s, c, entries.get_site(s, c, site), body, ACTOR)
        line = f"/{c.slug}/{st.slug}: {st.name} ({st.kind}) at {st.latitude}, {st.longitude}"
    console.print(line)


@sites.command("retire")
def sites_retire(city: CityArg, site: SiteArg) -> None:
    """Retire a site that events refer to; delete one that none does, with its devices."""
    from fabcity.registry import changes, entries

    with refused(), session() as s:
        c = entries.get_city(s, city)
        removal = changes.remove_site(s, c, entries.get_site(s, c, site), ACTOR)
    console.print(removal_line(removal))


@resources.command("add")
def resources_add(
    name: Annotated[str, typer.Argument(help="Its name in events, e.g. plywood.")],
    dimension: Annotated[str, typer.Option(help="mass, energy, count, time or volume.")],
    mfa_category: Annotated[
        str | None, typer.Option(help="MF1 biomass, MF2 metal ores, MF3 minerals, MF4 fossil.")
    ] = None,
    secondary: Annotated[bool, typer.Option(help="Made of waste: counts as recycled.")] = False,
) -> None:
    """Add a resource, e.g. `fabcity resources add plywood --dimension mass --mfa-category MF1`."""
    from fabcity.registry import changes

    try:
        body = api_schemas.ResourceIn.model_validate(
            {"name": name, "dimension": dimension, "mfa_category": mfa_category,
             "secondary": secondary}
        )  # fmt: skip
    except ValueError as exc:
        fail(exc, 1)
    with refused(), session() as s:
        r = changes.add_resource(s, body, ACTOR)
        line = f"added {r.name}: {r.dimension} in {r.unit}, MFA {r.mfa_category or '—'}"
    console.print(line + (", secondary" if body.secondary else ""))


@resources.command("list")
def resources_list(as_json: JsonFlag = False) -> None:
    """Every resource: unit, MFA category, and whether it is secondary."""
    from fabcity.registry import entries

    with session() as s:
        found = entries.list_resources(s)
        if as_json:
            print_json([api_schemas.Resource.model_validate(r) for r in found])
            return
        rows = [
            (r.name, r.unit, r.mfa_category or "—", "yes" if r.secondary else "no") for r in found
        ]
    table = Table("resource", "unit", "MFA", "secondary")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@cities.command("list")
def cities_list(as_json: JsonFlag = False) -> None:
    """Every city: its slug (what commands and events name it by), zone and population."""
    from fabcity.registry import entries

    with session() as s:
        found = [api_schemas.City.model_validate(c) for c in entries.list_cities(s)]
    if as_json:
        print_json(found)
        return
    table = Table("city", "name", "country", "time zone", "population", "retired")
    for c in found:
        retired = c.retired_at.date().isoformat() if c.retired_at else ""
        population = f"{c.population:,}" if c.population is not None else "—"
        table.add_row(c.slug, c.name, c.country, c.timezone, population, retired)
    console.print(table)


@sites.command("list")
def sites_list(city: CityArg, as_json: JsonFlag = False) -> None:
    """A city's sites: slug, kind, where they are."""
    from fabcity.registry import entries

    with refused(), session() as s:
        c = entries.get_city(s, city)
        found = [entries.site_view(site, c.slug) for site in entries.list_sites(s, c)]
    if as_json:
        print_json(found)
        return
    table = Table("site", "name", "kind", "latitude", "longitude", "retired")
    for site in found:
        where = [f"{v:.5f}" if v is not None else "—" for v in (site.latitude, site.longitude)]
        retired = site.retired_at.date().isoformat() if site.retired_at else ""
        table.add_row(site.slug, site.name, site.kind, *where, retired)
    console.print(table)
