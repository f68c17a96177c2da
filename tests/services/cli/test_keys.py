"""`fabcity keys`: what an operator gets back when a key cannot be made, revoked or rotated."""

from __future__ import annotations

from tests.services.cli.runner import assert_refused, fabcity


def test_a_site_key_without_its_tenant_is_refused(sqlite_url: str) -> None:
    done = fabcity(sqlite_url, "keys", "create", "--role", "site")
    assert_refused(done, 1, "a site key needs its city, site")


def test_revoking_or_rotating_an_unknown_key_names_it(sqlite_url: str) -> None:
    for command in ("revoke", "rotate"):
        assert_refused(fabcity(sqlite_url, "keys", command, "999"), 1, "no key 999")


def test_rotating_a_revoked_key_is_refused(sqlite_url: str) -> None:
    created = fabcity(sqlite_url, "keys", "create", "--role", "admin")
    assert created.returncode == 0, created.stderr
    key_id = created.stderr.split()[2]
    assert fabcity(sqlite_url, "keys", "revoke", key_id).returncode == 0
    done = fabcity(sqlite_url, "keys", "rotate", key_id)
    assert_refused(done, 1, f"key {key_id} is revoked; create a new one")
