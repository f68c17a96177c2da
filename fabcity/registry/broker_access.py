"""Mosquitto's password file and ACL for the registered device keys, so that a device can
publish only to its own topics and the bridge reads them all. Pure text; the CLI writes it.

Formats: man 5 mosquitto.conf (`password_file`, `acl_file`) and mosquitto_passwd(1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from fabcity.adapters.routing import device_filters
from fabcity.registry import entries, keys

BRIDGE_USER = "fabcity-bridge"


@dataclass(frozen=True)
class DeviceUser:
    user: str  # the key's lookup
    password_hash: str  # `$7$…`
    source: str  # /{city}/{site}/{device}
    adapter_topics: tuple[str, ...]


def device_users(session: Session) -> list[DeviceUser]:
    """A broker user for each live device key, with its device's adapter topics."""
    adapters = {d.source: tuple(device_filters(d)) for d in entries.adapter_devices(session)}
    users = []
    for key in keys.device_credentials(session):
        source = f"/{key.city}/{key.site}/{key.device}"
        assert key.mqtt_hash is not None
        users.append(DeviceUser(key.lookup, key.mqtt_hash, source, adapters.get(source, ())))
    return users


def password_file(users: Iterable[DeviceUser], bridge_user: str, bridge_hash: str) -> str:
    lines = [f"{bridge_user}:{bridge_hash}"]
    lines += [f"{u.user}:{u.password_hash}" for u in users]
    return "\n".join(lines) + "\n"


def acl_file(users: Iterable[DeviceUser], bridge_user: str, topic_prefix: str) -> str:
    """Per-user topic rules. Mosquitto denies what no rule allows: a device's publish to
    another device's topic is dropped by the broker (MQTT 5 publishers get reason 135)."""
    prefix = topic_prefix.rstrip("/")
    out = [
        "# Written by `fabcity broker-config`; regenerate it after keys change.",
        "",
        "# The bridge reads every device (its shared subscription included).",
        f"user {bridge_user}",
        "topic read #",
        "topic read $share/#",
        "",
    ]
    for u in users:
        out.append(f"# {u.source}")
        out.append(f"user {u.user}")
        out.append(f"topic write {prefix}{u.source}/#")
        # Firmware that reads commands under its own topics (Tasmota, Shelly, OctoPrint) may
        # also subscribe there.
        out += [f"topic readwrite {t}" for t in u.adapter_topics]
        out.append("")
    return "\n".join(out)


def secure_conf(base: str, password_path: str, acl_path: str) -> str:
    """A broker configuration: `base` with anonymous access off and our two files on."""
    conf = re.sub(r"^allow_anonymous .*$", "", base, flags=re.M)
    conf = re.sub(r"^(password_file|acl_file) .*$", "", conf, flags=re.M)
    return (
        conf.rstrip()
        + "\n\n# --- Access (written by `fabcity broker-config`) ---\n\n"
        + "allow_anonymous false\n"
        + f"password_file {password_path}\n"
        + f"acl_file {acl_path}\n"
    )
