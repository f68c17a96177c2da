"""`fabcity broker-config`: Mosquitto's access files from the live device keys."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from fabcity.core.settings import get_settings
from services.cli.common import err, session

# Nameless: the root app takes its one command as its own.
app = typer.Typer()


def _bridge_password(env_file: Path) -> str:
    """The bridge's password from an earlier run, so that a running bridge keeps working."""
    password = None
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            if line.startswith("FABCITY_MQTT_PASSWORD="):
                password = line.partition("=")[2]
    return password or secrets.token_urlsafe(32)


@app.command("broker-config")
def broker_config(
    out: Annotated[Path, typer.Option(help="Directory to write the files into.")],
    base: Annotated[
        Path | None,
        typer.Option(help="Broker configuration to start from [default: deploy/mosquitto/…]."),
    ] = None,
    files_at: Annotated[
        str | None,
        typer.Option(help="Where the broker will find the files [default: OUT, absolute]."),
    ] = None,
) -> None:
    """Write Mosquitto's access files: `passwords` (a user per live device key, and the bridge),
    `acl` (each device publishes only to its own topics; the bridge reads all),
    `mosquitto.conf` (BASE with anonymous access off) and `bridge.env` (the bridge's
    FABCITY_MQTT_USERNAME and _PASSWORD, kept across runs). Run it again after keys change,
    then reload the broker (SIGHUP)."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.registry import broker_access
    from fabcity.registry.keys import mosquitto_hash

    settings = get_settings()
    base = base or Path("deploy/mosquitto/mosquitto.conf")
    base_text = base.read_text() if base.is_file() else "listener 1883\n"
    out.mkdir(parents=True, exist_ok=True)
    password = _bridge_password(out / "bridge.env")
    with session() as s:
        users = broker_access.device_users(s)
    where = Path(files_at) if files_at else out.resolve()
    written = {
        "passwords": broker_access.password_file(
            users, broker_access.BRIDGE_USER, mosquitto_hash(password)
        ),
        "acl": broker_access.acl_file(users, broker_access.BRIDGE_USER, settings.mqtt_topic_prefix),
        "mosquitto.conf": broker_access.secure_conf(
            base_text, str(where / "passwords"), str(where / "acl")
        ),
        "bridge.env": f"FABCITY_MQTT_USERNAME={broker_access.BRIDGE_USER}\n"
        f"FABCITY_MQTT_PASSWORD={password}\n",
    }
    for name, text in written.items():
        path = out / name
        path.write_text(text)
        # The bridge's password is for the bridge only. The broker (its own user) must read the
        # rest; the hashes are of 256-bit random keys, which no one guesses back from a hash.
        os.chmod(path, 0o600 if name == "bridge.env" else 0o644)
    err.print(f"wrote {', '.join(written)} to {out}: {len(users)} device users and the bridge")
