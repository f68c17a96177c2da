"""`fabcity broker-config`: Mosquitto's access control from the live device keys."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from fabcity.core.settings import get_settings
from services.cli.common import err, session

# Nameless: the root app takes its one command as its own.
app = typer.Typer()

# One file per setting, named as its variable: the form FABCITY_SECRETS_DIR reads.
PASSWORD_FILE = "fabcity_mqtt_password"
USERNAME_FILE = "fabcity_mqtt_username"
CLIENT_ID_FILE = "fabcity_mqtt_client_id"
HEALTH_PASSWORD_FILE = "health.password"


def _kept_password(path: Path) -> str:
    """A password from an earlier run, so that what runs with it keeps working."""
    if path.is_file() and (password := path.read_text().strip()):
        return password
    return secrets.token_urlsafe(32)


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


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
    plugin: Annotated[
        str,
        typer.Option(help="Path of mosquitto_dynamic_security.so where the broker runs."),
    ] = "/usr/lib/mosquitto_dynamic_security.so",
    bridges: Annotated[
        int, typer.Option(min=1, help="Bridges (broker users fabcity-bridge-1…N).")
    ] = 1,
    processes: Annotated[
        int,
        typer.Option(
            min=1, help="Processes per bridge (`fabcity bridge --processes`): a user each."
        ),
    ] = 1,
) -> None:
    """Write Mosquitto's access control: `dynamic-security.json` (a user per live device key,
    which publishes only under its own topics and subscribes only to its own adapter topics; a
    user per bridge, which reads everything; a healthcheck user), `mosquitto.conf` (BASE with
    anonymous access off, client ids bound to user names, the plugin on), and for each bridge
    a directory `bridge-N/` with its user name, client id and password, one file each (point
    FABCITY_SECRETS_DIR at it; `bridge-N.env` holds the same). Passwords are kept across runs.
    Run it again after keys change, then restart the broker (the plugin reads its file at
    start; persistent sessions are saved on a clean stop)."""
    # lazy: the registry and its database stack add ~0.4 s to `fabcity --help`
    from fabcity.registry import broker_access
    from fabcity.registry.keys import mosquitto_hash

    settings = get_settings()
    base = base or Path("deploy/mosquitto/mosquitto.conf")
    base_text = base.read_text() if base.is_file() else "listener 1883\n"
    out.mkdir(parents=True, exist_ok=True)
    with session() as s:
        users = broker_access.device_users(s)
    where = Path(files_at) if files_at else out.resolve()

    bridge_users: list[broker_access.ServiceUser] = []
    for n in range(1, bridges + 1):
        name = broker_access.bridge_user(n)
        secrets_dir = out / f"bridge-{n}"
        password = _kept_password(secrets_dir / PASSWORD_FILE)
        password_hash = mosquitto_hash(password)
        # `fabcity bridge --processes P` runs its children as `{user}-p{i}`: same password.
        names = (
            [name]
            if processes == 1
            else [name] + [broker_access.bridge_user(n, i) for i in range(1, processes + 1)]
        )
        bridge_users += [broker_access.ServiceUser(u, password_hash) for u in names]
        # The bridge's password is for the bridge only.
        _write(secrets_dir / USERNAME_FILE, name, 0o600)
        _write(secrets_dir / CLIENT_ID_FILE, name, 0o600)
        _write(secrets_dir / PASSWORD_FILE, password, 0o600)
        _write(
            out / f"bridge-{n}.env",
            f"FABCITY_MQTT_USERNAME={name}\nFABCITY_MQTT_CLIENT_ID={name}\n"
            f"FABCITY_MQTT_PASSWORD={password}\n",
            0o600,
        )
    health_password = _kept_password(out / HEALTH_PASSWORD_FILE)
    health = broker_access.ServiceUser(broker_access.HEALTH_USER, mosquitto_hash(health_password))
    config = broker_access.dynamic_security(
        users, bridge_users, health, settings.mqtt_topic_prefix, settings.mqtt_share_group
    )
    # The broker (its own system user) reads these. The device hashes are of 256-bit random
    # keys, which no one guesses back from a hash; the healthcheck user may read one $SYS
    # topic only.
    _write(out / HEALTH_PASSWORD_FILE, health_password, 0o644)
    _write(out / "dynamic-security.json", json.dumps(config, indent=1) + "\n", 0o644)
    conf = broker_access.secure_conf(base_text, str(where / "dynamic-security.json"), plugin)
    _write(out / "mosquitto.conf", conf, 0o644)
    err.print(
        f"wrote dynamic-security.json, mosquitto.conf and {bridges} bridge credentials to "
        f"{out}: {len(users)} device users"
    )
