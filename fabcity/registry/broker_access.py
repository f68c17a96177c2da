"""Mosquitto's access control for the registered device keys: a dynamic-security configuration
(users, roles, topic rules) and the broker configuration that loads it. Pure data; the CLI
writes it.

Why the dynamic-security plugin and not `acl_file`: Mosquitto 2.0's ACL file grants every
SUBSCRIBE (it checks only what a client may *receive*), so a device could join the bridges'
`$share` group and take a share of every device's messages, which the broker then drops at
delivery. The plugin checks SUBSCRIBE against `subscribePattern` rules and refuses by default.

Formats: the plugin's README and `mosquitto_ctrl dynsec init` (Mosquitto 2.0), man 5
mosquitto.conf.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from fabcity.adapters.routing import device_filters
from fabcity.registry import entries, keys

BRIDGE_USER_PREFIX = "fabcity-bridge"
BRIDGE_ROLE = "fabcity-bridge"
# A user of its own for the broker's healthcheck: it may read one $SYS topic and nothing else.
HEALTH_USER = "fabcity-health"
HEALTH_ROLE = "fabcity-health"
HEALTH_TOPIC = "$SYS/broker/uptime"
# Where the eclipse-mosquitto:2 image keeps the plugin (Debian's package: /usr/lib/<triplet>/).
DYNSEC_PLUGIN = "/usr/lib/mosquitto_dynamic_security.so"

# Rules are tried from the highest priority down; a refusal must win over any allow.
_DENY_FIRST = 10


@dataclass(frozen=True)
class DeviceUser:
    user: str  # the key's lookup
    password_hash: str  # `$7$…`
    source: str  # /{city}/{site}/{device}
    adapter_topics: tuple[str, ...]


@dataclass(frozen=True)
class ServiceUser:
    """A broker user of the platform's own (a bridge process, the healthcheck)."""

    user: str
    password_hash: str  # `$7$…`


def bridge_user(bridge: int, process: int | None = None) -> str:
    """`fabcity-bridge-{n}`, and `-p{i}` for the processes of `fabcity bridge --processes`.
    The broker takes a client's user name as its client id, so each bridge process, which
    keeps a persistent session of its own, needs a user of its own."""
    name = f"{BRIDGE_USER_PREFIX}-{bridge}"
    return name if process is None else f"{name}-p{process}"


def device_users(session: Session) -> list[DeviceUser]:
    """A broker user for each live device key, with its device's adapter topics."""
    adapters = {d.source: tuple(device_filters(d)) for d in entries.adapter_devices(session)}
    users = []
    for key in keys.device_credentials(session):
        source = f"/{key.city}/{key.site}/{key.device}"
        assert key.mqtt_hash is not None
        users.append(DeviceUser(key.lookup, key.mqtt_hash, source, adapters.get(source, ())))
    return users


def _password(password_hash: str) -> dict[str, Any]:
    """A `$7$iterations$salt$hash` (mosquitto_passwd's PBKDF2-HMAC-SHA512, 12-byte salt,
    64-byte digest) as the plugin's `password`, `salt`, `iterations`: the same derivation,
    so the keys' stored hashes serve both."""
    parts = password_hash.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError("not a Mosquitto $7$ password hash")
    _, _, iterations, salt, digest = parts
    return {"password": digest, "salt": salt, "iterations": int(iterations)}


def _acl(acltype: str, topic: str, allow: bool = True, priority: int = 0) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": allow, "priority": priority}


def _own_filter(topic_filter: str) -> bool:
    """A filter that names one device's topics. One that starts with a wildcard
    (`+/klipper/status`) spans every device of that kind, so a device may not read it."""
    return topic_filter.split("/", 1)[0] not in ("+", "#")


def _device_role(name: str, user: DeviceUser, prefix: str) -> dict[str, Any]:
    acls = [
        # Never a share of someone else's messages, whatever an adapter filter looks like
        # (the plugin's `+` matches `$share` as a level).
        _acl("subscribePattern", "$share/#", allow=False, priority=_DENY_FIRST),
        _acl("publishClientSend", f"{prefix}{user.source}/#"),
    ]
    for topic in user.adapter_topics:
        # Firmware publishes its state under its adapter topics...
        acls.append(_acl("publishClientSend", topic))
        # ...and some reads its commands there (Tasmota, Shelly, OctoPrint).
        if _own_filter(topic):
            acls.append(_acl("subscribePattern", topic))
            acls.append(_acl("publishClientReceive", topic))
    return {"rolename": name, "textname": user.source, "acls": acls}


def _bridge_role(prefix: str, share_group: str) -> dict[str, Any]:
    return {
        "rolename": BRIDGE_ROLE,
        "textname": "fabcity bridges: read every device",
        "acls": [
            # The broker's own topics are no business of the bridge's.
            _acl("subscribePattern", "$CONTROL/#", allow=False, priority=_DENY_FIRST),
            _acl("subscribePattern", "$SYS/#", allow=False, priority=_DENY_FIRST),
            _acl("subscribePattern", f"$share/{share_group}/{prefix}/+/+/+/events"),
            # Adapter topics (the bridge subscribes to each device's own filters, and to the
            # wildcard ones), plain subscriptions.
            _acl("subscribePattern", "#"),
            _acl("publishClientReceive", "#"),
        ],
    }


def _client(user: str, password_hash: str, role: str, text: str) -> dict[str, Any]:
    return {
        "username": user,
        "textname": text,
        **_password(password_hash),
        "roles": [{"rolename": role, "priority": 0}],
        "groups": [],
    }


def dynamic_security(
    users: Iterable[DeviceUser],
    bridges: Sequence[ServiceUser],
    health: ServiceUser,
    topic_prefix: str,
    share_group: str,
) -> dict[str, Any]:
    """The plugin's configuration (`plugin_opt_config_file`): a role per device, one for the
    bridges, one for the healthcheck; whatever no rule allows is refused (publish, receive,
    subscribe). Unsubscribing is always allowed: it can only take away."""
    prefix = topic_prefix.rstrip("/")
    clients = [_client(b.user, b.password_hash, BRIDGE_ROLE, "fabcity bridge") for b in bridges]
    clients.append(_client(health.user, health.password_hash, HEALTH_ROLE, "healthcheck"))
    roles = [
        _bridge_role(prefix, share_group),
        {
            "rolename": HEALTH_ROLE,
            "textname": "broker healthcheck",
            "acls": [
                _acl("subscribeLiteral", HEALTH_TOPIC),
                _acl("publishClientReceive", HEALTH_TOPIC),
            ],
        },
    ]
    for u in users:
        role = f"device:{u.user}"
        roles.append(_device_role(role, u, prefix))
        clients.append(_client(u.user, u.password_hash, role, u.source))
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


_ACCESS_OPTIONS = (
    "allow_anonymous",
    "password_file",
    "acl_file",
    "use_username_as_clientid",
    "plugin",
    "plugin_opt_config_file",
)


def secure_conf(base: str, dynsec_path: str, plugin_path: str = DYNSEC_PLUGIN) -> str:
    """A broker configuration: `base` with anonymous access off and the plugin on."""
    conf = base
    for option in _ACCESS_OPTIONS:
        conf = re.sub(rf"^{option} .*$", "", conf, flags=re.M)
    return (
        conf.rstrip()
        + "\n\n# --- Access (written by `fabcity broker-config`) ---\n\n"
        + "allow_anonymous false\n"
        # A client's id is its user name: no one can take another user's session (erase the
        # bridge's queue with a clean start, or push a running bridge off the broker).
        + "use_username_as_clientid true\n"
        + f"plugin {plugin_path}\n"
        + f"plugin_opt_config_file {dynsec_path}\n"
    )
