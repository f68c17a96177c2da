"""The dynamic-security configuration as data: the rules a real broker enforces are tested in
tests/security/test_broker.py; here, what each user is given."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from fabcity.registry import broker_access
from fabcity.registry.broker_access import DeviceUser, ServiceUser
from fabcity.registry.keys import mosquitto_hash

PRINTER = DeviceUser(
    "k1", mosquitto_hash("s1"), "/c/lab/printer", ("octoPrint/printer/#", "+/klipper/status")
)
BRIDGE = ServiceUser("fabcity-bridge-1", mosquitto_hash("b"))
HEALTH = ServiceUser("fabcity-health", mosquitto_hash("h"))


def config() -> dict[str, Any]:
    return broker_access.dynamic_security([PRINTER], [BRIDGE], HEALTH, "fabcity/v1/", "ingest")


def acls(role: str) -> list[tuple[str, str, bool]]:
    found = next(r for r in config()["roles"] if r["rolename"] == role)
    return [(a["acltype"], a["topic"], a["allow"]) for a in found["acls"]]


def test_the_plugin_checks_the_same_password() -> None:
    client = next(c for c in config()["clients"] if c["username"] == "k1")
    salt = base64.b64decode(client["salt"])
    # The plugin's own derivation (plugins/dynamic-security/auth.c): 12-byte salt, 64 bytes.
    assert len(salt) == 12
    digest = hashlib.pbkdf2_hmac("sha512", b"s1", salt, client["iterations"], dklen=64)
    assert base64.b64decode(client["password"]) == digest


def test_whatever_no_rule_allows_is_refused() -> None:
    assert config()["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }


def test_a_device_publishes_under_its_own_topics_and_joins_no_share() -> None:
    rules = acls("device:k1")
    assert ("publishClientSend", "fabcity/v1/c/lab/printer/#", True) in rules
    assert ("subscribePattern", "$share/#", False) in rules
    allowed = {t for kind, t, allow in rules if kind == "subscribePattern" and allow}
    # A filter that starts with a wildcard spans every device of its kind.
    assert allowed == {"octoPrint/printer/#"}
    role = next(r for r in config()["roles"] if r["rolename"] == "device:k1")
    deny = next(a for a in role["acls"] if not a["allow"])
    assert all(deny["priority"] > a["priority"] for a in role["acls"] if a["allow"])


def test_the_bridge_reads_its_share_and_not_the_brokers_topics() -> None:
    rules = acls(broker_access.BRIDGE_ROLE)
    assert ("subscribePattern", "$share/ingest/fabcity/v1/+/+/+/events", True) in rules
    assert ("subscribePattern", "$CONTROL/#", False) in rules
    assert ("publishClientReceive", "#", True) in rules
    assert not [r for r in rules if r[0] == "publishClientSend"]


def test_the_conf_turns_off_every_other_way_in() -> None:
    base = "listener 1883\nallow_anonymous true\npassword_file /x\nacl_file /y\n"
    conf = broker_access.secure_conf(base, "/b/dynamic-security.json", "/p/dynsec.so")
    lines = conf.splitlines()
    assert "allow_anonymous true" not in lines
    assert not [line for line in lines if line.startswith(("password_file", "acl_file"))]
    for line in (
        "allow_anonymous false",
        "use_username_as_clientid true",
        "plugin /p/dynsec.so",
        "plugin_opt_config_file /b/dynamic-security.json",
    ):
        assert line in lines


def test_a_hash_not_in_mosquittos_form_is_refused() -> None:
    with pytest.raises(ValueError):
        broker_access.dynamic_security(
            [DeviceUser("k", "plain", "/c/s/d", ())], [BRIDGE], HEALTH, "p", "g"
        )
