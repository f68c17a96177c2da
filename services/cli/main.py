"""The `fabcity` command: the processes it runs and the admin groups, in one app."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli import (
    broker,
    deadletters,
    devices,
    events,
    imports,
    keys,
    metrics,
    processes,
    registry,
)

app = typer.Typer(
    help="fabcity: how far a city is from being a Fab City.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"fabcity {version('fabcity')}")
        raise typer.Exit()


@app.callback()
def _root(
    _: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """fabcity: how far a city is from being a Fab City."""


# Nameless groups lend their commands to the root, listed in this order before the groups.
app.add_typer(processes.app)
app.add_typer(broker.app)
app.add_typer(imports.app, name="import")
app.add_typer(events.app, name="events")
app.add_typer(metrics.app, name="metrics")
app.add_typer(registry.cities, name="cities")
app.add_typer(registry.sites, name="sites")
app.add_typer(devices.app, name="devices")
app.add_typer(registry.resources, name="resources")
app.add_typer(deadletters.app, name="deadletters")
app.add_typer(keys.app, name="keys")


if __name__ == "__main__":
    app()
