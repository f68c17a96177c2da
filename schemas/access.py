"""Bodies of the access endpoints: API keys and the dead letters an operator replays."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.api import Slug

# Read from the database, aware and in UTC on both (`fabcity.core.sql.UtcDateTime`).
Stored = datetime


class KeyIn(BaseModel):
    """A key to make. `site` keys name their city and site; `device` keys also their device;
    `planner` keys may name a city (one city) or not (every city); `admin` keys name nothing."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "site", "device", "planner"]
    city: Slug | None = None
    site: Slug | None = None
    device: Slug | None = None
    name: str | None = Field(default=None, max_length=200, description="Who holds it, for you.")


class Caller(BaseModel):
    """Who a key is: its role and what it is bound to."""

    role: str
    city: str | None = None
    site: str | None = None
    device: str | None = None


class Key(BaseModel):
    """A key as listed: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    lookup: str = Field(description="The key's public part (after `fc_`); its MQTT user name.")
    role: str
    city: str | None
    site: str | None
    device: str | None
    name: str | None
    created_at: Stored
    revoked_at: Stored | None
    replaced_by: int | None


class IssuedKey(Key):
    secret: str = Field(description="The key itself. Shown this once; only its hash is kept.")


class DeadLetter(BaseModel):
    id: int
    received_at: Stored
    channel: str
    topic: str | None
    reason: str
    size: int = Field(description="Payload bytes received.")
    sha256: str = Field(description="SHA-256 of the whole payload, hex.")
    kept: int = Field(description="Payload bytes kept: `size` unless the payload was cut short.")
    truncated: bool = Field(description="Only the first `kept` bytes were kept: not replayable.")
    content_type: str | None = Field(default=None, description="MQTT 5 content type, if any.")
    properties: list[tuple[str, str]] = Field(
        default_factory=list, description="MQTT 5 user properties, [name, value] in order."
    )
    replays: int = Field(default=0, description="Replays that still refused it.")
    last_replay_at: Stored | None = Field(default=None, description="When it was last replayed.")
    last_replay_outcome: str | None = Field(
        default=None,
        description="Why the last replay still refused it; `reason` stays why it was refused "
        "when it came.",
    )


class DeadLetterDetail(DeadLetter):
    payload: str = Field(description="The payload kept, as text (invalid UTF-8 replaced).")
    payload_base64: str = Field(description="The payload kept, its exact bytes.")


class DeadLetterFilter(BaseModel):
    """Which dead letters to replay. Every given condition must hold; none given: all."""

    model_config = ConfigDict(extra="forbid")

    topic_prefix: str | None = Field(default=None, max_length=1024)
    reason_contains: str | None = Field(default=None, max_length=1000)
    received_before: datetime | None = None
    received_after: datetime | None = None


class ReplayResult(BaseModel):
    replayed: int = Field(description="Dead letters run through the ingest path again.")
    ingested: int = Field(description="Those that went through (and were deleted).")
    still_dead: int = Field(
        description="Those still refused: kept, with this replay's outcome beside their reason."
    )
    events: int = Field(description="Events stored by the replay (duplicates not counted).")
