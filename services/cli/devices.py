"""`fabcity devices add|list|update|retire`: devices and the adapters that read what they
publish."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from schemas import api as api_schemas
from services.cli.common import (
    CityArg,
    DeviceArg,
    JsonFlag,
    SiteArg,
    console,
    fail,
    print_json,
    refused,
    session,
)

app = typer.Typer(help="Devices and the adapters that read what they publish.")

# The setting that says where each adapter finds its device, set by `--base-topic`.
_WHERE = {
    "octoprint": "base_topic",
    "moonraker": "instance_name",
    "bambu": "serial",
    "tasmota": "topic",
    "shelly": "topic_prefix",
    "esphome": "topic_prefix",
    "cloudevents": "topic",
    "prusalink": "url",
}


def _setting_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word is a string


def _settings(
    setting: list[str] | None, adapter: str, base_topic: str | None, material: str | None
) -> dict[str, object]:
    """The adapter settings `devices add` was given, or a refusal naming the bad option."""
    settings: dict[str, object] = {}
    for item in setting or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set {item!r}: write KEY=VALUE", 2)
        settings[key] = _setting_value(value)
    if base_topic is not None:
        if adapter not in _WHERE:
            fail(f"--base-topic does not apply to the {adapter} adapter", 2)
        settings[_WHERE[adapter]] = base_topic
    if material is not None:
        settings["material"] = material
    return settings


@app.command("add")
def devices_add(
    city: CityArg,
    site: SiteArg,
    slug: DeviceArg,
    adapter: Annotated[
        str, typer.Option(help="fabcity, " + ", ".join(_WHERE) + ", sparkplug.")
    ] = "fabcity",
    base_topic: Annotated[
        str | None,
        typer.Option(
            help="Where the device publishes: OctoPrint base topic, Moonraker instance name, "
            "Tasmota %topic%, Shelly/ESPHome topic prefix, CloudEvents topic, Bambu serial, "
            "PrusaLink URL."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Display name; the slug if absent.")] = None,
    kind: Annotated[str, typer.Option(help="printer, laser, cnc, meter, scale, ...")] = "printer",
    material: Annotated[str | None, typer.Option(help="Loaded material, e.g. PLA.")] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Any adapter setting as KEY=VALUE (VALUE read as JSON when it parses), "
            "e.g. --set group_id=fablab --set access_code=12345678.",
        ),
    ] = None,
) -> None:
    """Register a device and the topic or address it sits behind."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.registry import entries

    settings = _settings(setting, adapter, base_topic, material)
    try:
        with refused(), session() as s:
            st = entries.get_site(s, entries.get_city(s, city), site)
            body = api_schemas.DeviceIn(
                slug=slug, name=name or slug, kind=kind, adapter=adapter, settings=settings
            )
            stored = dict(entries.create_device(s, st, body).settings)
    except ValueError as exc:  # the body itself (slug, name)
        fail(exc, 1)
    console.print(f"registered /{city}/{site}/{slug} ({adapter}) {stored}")


@app.command("list")
def devices_list(
    city: Annotated[str | None, typer.Argument(help="Only this city's devices.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every device: adapter, settings, and whether it is online and when it was last seen."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.registry import entries

    with session() as s:
        rows = entries.all_devices(s, city)
        if as_json:
            print_json([entries.device_view(d, c, st) for c, st, d in rows])
            return
    table = Table("device", "adapter", "settings", "online", "last seen")
    for c, st, d in rows:
        online = "—" if d.online is None else ("yes" if d.online else "no")
        if d.retired_at is not None:  # kept for its events; its new ones are refused
            online = f"retired {d.retired_at.date().isoformat()}"
        seen = d.last_seen.isoformat(timespec="seconds") if d.last_seen else "—"
        table.add_row(f"/{c}/{st}/{d.slug}", d.adapter, str(d.settings), online, seen)
    console.print(table)


@app.command("update")
def devices_update(
    city: CityArg,
    site: SiteArg,
    slug: DeviceArg,
    name: Annotated[str | None, typer.Option(help="Its name as people know it.")] = None,
    kind: Annotated[str | None, typer.Option(help="printer, laser, cnc, meter, scale, ...")] = None,
    adapter: Annotated[
        str | None, typer.Option(help="How it speaks: fabcity or a firmware's own format.")
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option("--set", help="Set an adapter setting, KEY=VALUE (VALUE read as JSON)."),
    ] = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", help="Remove an adapter setting.")
    ] = None,
) -> None:
    """Correct a device. New settings or kind derive its stored events' flows again, and the
    hours they fall in are recomputed; the change is logged (`fabcity cities changes`)."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.ingest import rebuild
    from fabcity.registry import changes, entries

    given: dict[str, object] = {"name": name, "kind": kind, "adapter": adapter}
    given = {k: v for k, v in given.items() if v is not None}
    with refused(), session() as s:
        c = entries.get_city(s, city)
        st = entries.get_site(s, c, site)
        device = changes.get_device(s, st, slug)
        if setting or unset:
            merged = dict(device.settings or {})
            merged.update(_settings(setting, adapter or device.adapter, None, None))
            for key in unset or []:
                merged.pop(key, None)
            given["settings"] = merged
        if not given:
            fail("nothing to change: give at least one option", 2)
        try:
            body = api_schemas.DevicePatch.model_validate(given)
        except ValueError as exc:
            fail(exc, 1)
        d = changes.update_device(s, c, st, device, body, "cli", rebuild.rederive_device)
        line = f"/{city}/{site}/{slug}: {d.name} ({d.kind}, {d.adapter}) {dict(d.settings)}"
    console.print(line)


@app.command("retire")
def devices_retire(city: CityArg, site: SiteArg, slug: DeviceArg) -> None:
    """Retire a device that events refer to (its new events are refused with the reason);
    delete one that none does."""
    from fabcity.registry import changes, entries

    with refused(), session() as s:
        c = entries.get_city(s, city)
        st = entries.get_site(s, c, site)
        removal = changes.remove_device(s, c, st, changes.get_device(s, st, slug), "cli")
    console.print(f"{removal.outcome} {removal.entry}: {removal.detail}")
