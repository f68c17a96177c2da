"""The `fabcity` command: the processes it runs and the admin groups, in one app."""

from __future__ import annotations

import typer

from services.cli import broker, deadletters, devices, imports, keys, metrics, processes

app = typer.Typer(
    help="fabcity: how far a city is from being a Fab City.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Nameless groups lend their commands to the root, listed in this order before the groups.
app.add_typer(processes.app)
app.add_typer(broker.app)
app.add_typer(imports.app, name="import")
app.add_typer(metrics.app, name="metrics")
app.add_typer(devices.app, name="devices")
app.add_typer(deadletters.app, name="deadletters")
app.add_typer(keys.app, name="keys")


if __name__ == "__main__":
    app()
