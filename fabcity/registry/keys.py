"""API keys: issued, checked, listed, revoked and rotated. All key queries live here.

A key reads `fc_{lookup}_{secret}`: `lookup` (16 hex characters) finds the row, `secret` (256
random bits) is checked against its SHA-256. Keys are shown once, when made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from fabcity.core import models
from fabcity.core.db import get_or_not_found
from fabcity.core.errors import Invalid, NotFound
from fabcity.registry import entries

Role = Literal["admin", "site", "device", "planner"]
ROLES: tuple[Role, ...] = ("admin", "site", "device", "planner")
PREFIX = "fc_"
LOOKUP_LEN = 16
# Mosquitto's PBKDF2-SHA512 password hashes (`$7$`): it reads the iteration count from the hash.
# Our secrets are random 256-bit keys, so the count guards nothing that entropy does not; it is
# kept modest because the broker pays it on every connect.
MQTT_ITERATIONS = 1000
MQTT_SALT_BYTES = 12


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's role and the tenant it is bound to."""

    role: Role
    key_id: int | None = None  # None: no key (auth off, or an anonymous public read)
    city: str | None = None
    site: str | None = None
    device: str | None = None

    @property
    def source_scope(self) -> str | None:
        """The event sources this principal may write: a prefix, or None for any."""
        if self.role == "site":
            return f"/{self.city}/{self.site}"
        if self.role == "device":
            return f"/{self.city}/{self.site}/{self.device}"
        return None

    def may_see_city(self, city: str) -> bool:
        return self.role == "admin" or self.city is None or self.city == city

    def may_see_site(self, city: str, site: str) -> bool:
        if not self.may_see_city(city):
            return False
        return self.role not in ("site", "device") or self.site == site


ADMIN = Principal("admin")


def within(source: str, scope: str) -> bool:
    """Whether an event source lies within a scope: the scope itself or below it."""
    return source == scope or source.startswith(scope + "/")


@dataclass(frozen=True)
class Issued:
    """A key as made: the only moment its secret exists outside the caller's hands."""

    key: models.ApiKey
    secret: str


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mosquitto_hash(
    password: str, salt: bytes | None = None, iterations: int = MQTT_ITERATIONS
) -> str:
    """A password in Mosquitto's password-file form: `$7$iterations$salt$hash`, base64 parts,
    PBKDF2-HMAC-SHA512 with a 64-byte result (as `mosquitto_passwd` of Mosquitto 2.0 writes)."""
    salt = salt if salt is not None else secrets.token_bytes(MQTT_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def _scope_of(
    session: Session, role: str, city: str | None, site: str | None, device: str | None
) -> tuple[str | None, str | None, str | None]:
    """The tenant a new key is bound to, checked against the registry."""
    if role not in ROLES:
        raise Invalid(f"role {role!r}: one of {', '.join(ROLES)}")
    wanted = {
        "admin": (),
        "planner": ("city",),
        "site": ("city", "site"),
        "device": ("city", "site", "device"),
    }[role]
    given = {"city": city, "site": site, "device": device}
    extra = [k for k, v in given.items() if v is not None and k not in wanted]
    if extra:
        raise Invalid(f"a {role} key is not bound to a {' or '.join(extra)}")
    missing = [k for k in wanted if given[k] is None and not (role == "planner" and k == "city")]
    if missing:
        raise Invalid(f"a {role} key needs its {', '.join(missing)}")
    if city is not None:
        c = entries.get_city(session, city)
        if site is not None:
            st = entries.get_site(session, c, site)
            if device is not None and device not in {
                d.slug for d in entries.list_devices(session, st)
            }:
                raise NotFound(f"no device {device!r} at site {site!r}; register it first")
    return city, site, device


def create(
    session: Session,
    role: str,
    city: str | None = None,
    site: str | None = None,
    device: str | None = None,
    name: str | None = None,
) -> Issued:
    city, site, device = _scope_of(session, role, city, site, device)
    lookup = secrets.token_hex(LOOKUP_LEN // 2)
    secret = f"{PREFIX}{lookup}_{secrets.token_urlsafe(32)}"
    key = models.ApiKey(
        lookup=lookup,
        secret_sha256=_sha256(secret),
        role=role,
        city=city,
        site=site,
        device=device,
        name=name,
        # Only devices speak MQTT with their key; other keys never reach the broker's file.
        mqtt_hash=mosquitto_hash(secret) if role == "device" else None,
        created_at=datetime.now(UTC),
    )
    session.add(key)
    session.flush()
    return Issued(key, secret)


def authenticate(session: Session, presented: str) -> Principal | None:
    """The principal of a presented key, or None when it is malformed, unknown or revoked."""
    if not presented.startswith(PREFIX) or len(presented) < len(PREFIX) + LOOKUP_LEN + 2:
        return None
    lookup = presented[len(PREFIX) : len(PREFIX) + LOOKUP_LEN]
    key = session.scalar(select(models.ApiKey).where(models.ApiKey.lookup == lookup))
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.secret_sha256, _sha256(presented)):
        return None
    return principal_of(key)


def principal_of(key: models.ApiKey) -> Principal:
    return Principal(key.role, key.id, key.city, key.site, key.device)  # type: ignore[arg-type]


def get(session: Session, key_id: int) -> models.ApiKey:
    return get_or_not_found(
        session, models.ApiKey, key_id, f"no key {key_id}; list them at /v1/keys"
    )


def list_keys(session: Session, include_revoked: bool = False) -> list[models.ApiKey]:
    query = select(models.ApiKey).order_by(models.ApiKey.id)
    if not include_revoked:
        query = query.where(models.ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke(session: Session, key_id: int) -> models.ApiKey:
    key = get(session, key_id)
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
    session.flush()
    return key


def rotate(session: Session, key_id: int) -> Issued:
    """A new key with the same role and tenant; the old one is revoked in the same commit."""
    old = get(session, key_id)
    if old.revoked_at is not None:
        raise Invalid(f"key {key_id} is revoked; create a new one")
    issued = create(session, old.role, old.city, old.site, old.device, old.name)
    old.revoked_at = datetime.now(UTC)
    old.replaced_by = issued.key.id
    session.flush()
    return issued


def device_credentials(session: Session) -> list[models.ApiKey]:
    """The live device keys: the broker's users."""
    return [k for k in list_keys(session) if k.role == "device" and k.mqtt_hash]
