"""Settings, read from `FABCITY_*` environment variables (and a `.env` file)."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FABCITY_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///data/fabcity.db",
        description="SQLAlchemy URL: `sqlite:///path` (embedded) or "
        "`postgresql+psycopg://user:pass@host/db`.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Celery broker and rate-limit store."
    )
    redis_prefix: str = Field(
        default="fabcity:", description="Prefix of every Redis key and Celery queue we use."
    )
    worker_mode: Literal["local", "celery"] = Field(
        default="local",
        description="`local`: recompute in this process (embedded); `celery`: send to workers.",
    )
    recompute_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="How often pending rows and dirty windows are swept even without a nudge.",
    )
    recompute_batch: int = Field(
        default=500,
        gt=0,
        description="Pending marks, and dirty windows, claimed per recompute transaction.",
    )

    mqtt_host: str = Field(default="127.0.0.1", description="MQTT broker host.")
    mqtt_port: int = Field(default=1883, description="MQTT broker port.")
    mqtt_username: str | None = Field(default=None, description="MQTT user, if the broker asks.")
    mqtt_password: str | None = Field(default=None, description="MQTT password.")
    mqtt_protocol: Literal["5", "3.1.1"] = Field(
        default="5",
        description="MQTT version. 3.1.1 for brokers that speak nothing newer (amqtt); "
        "there the bridge uses a plain subscription instead of a shared one.",
    )
    mqtt_client_id: str = Field(
        default="fabcity-bridge-1",
        description="Fixed, so the broker keeps the session and redelivers unacknowledged "
        "messages after a restart. Unique per bridge.",
    )
    mqtt_share_group: str = Field(
        default="ingest", description="Bridges in one `$share` group split the load."
    )
    mqtt_topic_prefix: str = Field(
        default="fabcity/v1", description="Root of the native topics `{prefix}/{city}/{site}/...`."
    )
    mqtt_receive_maximum: int = Field(
        default=10_000,
        gt=0,
        description="MQTT 5 inflight window. Must exceed `bridge_batch_size`: messages are "
        "acknowledged only after their batch commits.",
    )
    mqtt_session_expiry_s: int = Field(
        default=7 * 24 * 3600, description="How long the broker keeps the bridge's session."
    )
    mqtt_adapter_topics: list[str] = Field(
        default=[
            "octoPrint/#",
            "octoprint/#",
            "+/klipper/status",
            "+/klipper/state/print_stats/+",
            "+/moonraker/status",
            "tele/#",
            "stat/#",
            "+/online",
            "+/status/+",
            "+/events/rpc",
            "+/sensor/+/state",
            "spBv1.0/#",
        ],
        description="Topic filters of device sources the bridge subscribes to besides the "
        "topics of registered devices (which it always subscribes to), so that a device not "
        "yet registered is dead-lettered and can be replayed once it is. A JSON list; `[]` "
        "for registered devices only.",
    )
    mqtt_adapter_refresh_s: float = Field(
        default=0.5,
        gt=0,
        description="How often the bridge asks whether a device was registered, changed or "
        "retired (one read of `registry_version`); it reads the registry only when so.",
    )
    bridge_adapters: bool = Field(
        default=True,
        description="Read the device adapter topics. Adapters keep per-device state, so with "
        "several bridges exactly one reads them: set false on the others.",
    )
    # 2,000: against 1,000, a drain by two bridges took about 2 us less CPU per event in all
    # (bridges and PostgreSQL: a commit's round trips are shared by twice the events). The
    # batch wait still commits a slow trickle within 50 ms.
    bridge_batch_size: int = Field(default=2000, gt=0, description="Messages per commit.")
    # Unset: two writers for a bridge alone on PostgreSQL, one for each of `bridge --processes
    # P` (P > 1) and on SQLite (one writer at a time).
    # Two bridge processes draining a backlog, one writer each against two, spent 11.4
    # against 13.4 us of the bridges' CPU per event (medians of five alternated rounds) and
    # stored 75k against 70k events/s: with the cores busy, a second writer thread in the
    # same process mostly waits for the interpreter's lock, and each hand-over of it costs
    # CPU. A bridge alone left the cores 58 % busy, its one writer waiting on each commit:
    # with two, 1.61 against 1.43 x the raw drain, ahead in each of three alternated rounds,
    # at the same CPU per event (2026-12-01).
    bridge_writers: int | None = Field(
        default=None,
        gt=0,
        description="Writer threads per bridge process, each committing its own batches; "
        "unset: 2 for a bridge alone on PostgreSQL, 1 on SQLite and for each of `bridge "
        "--processes P` (set 1 where several bridges share a host's cores). The window "
        "(`mqtt_receive_maximum`) must exceed writers × `bridge_batch_size`.",
    )
    bridge_batch_wait_ms: int = Field(
        default=50, ge=0, description="Longest wait to fill a batch before committing it."
    )

    metrics_port: int | None = Field(
        default=None,
        description="Serve Prometheus metrics on this port (the bridge and the worker; the API "
        "serves /metrics itself). With `bridge --processes N`, process i uses port + i.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`json`: one JSON object per line with the event, city and topic ids a "
        "record carries, for a log pipeline.",
    )

    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0, description="Largest HTTP body.")
    max_batch_events: int = Field(default=5000, gt=0, description="Most events in one HTTP batch.")
    mqtt_max_payload_bytes: int = Field(
        default=256 * 1024,
        gt=0,
        description="Largest MQTT payload the bridge turns into an event; a larger one is "
        "dead-lettered. The broker's own `max_packet_size` (1 MiB in deploy/mosquitto) is the "
        "hard limit before it.",
    )
    dead_letter_payload_bytes: int = Field(
        default=256 * 1024,
        gt=0,
        description="How much of a refused payload a dead letter keeps; its full size and "
        "SHA-256 are kept too. A letter cut short cannot be replayed: at least "
        "`mqtt_max_payload_bytes` keeps every payload that could become an event replayable; "
        "more than `dead_letter_bytes_per_device` and the largest are never kept.",
    )
    dead_letter_period_s: float = Field(
        default=3600.0,
        gt=0,
        description="The period of the dead-letter quotas below. They are counted in each "
        "bridge process, from its start; a letter over one is not stored (the message is "
        "still acknowledged: it could never become an event) and is counted in "
        "`fabcity_dead_letters_total` instead.",
    )
    dead_letters_per_device: int = Field(
        default=100, gt=0, description="Dead letters kept per device topic per period."
    )
    dead_letter_bytes_per_device: int = Field(
        default=4 * 1024 * 1024, gt=0, description="Payload bytes kept per device per period."
    )
    dead_letters_per_city: int = Field(
        default=1000,
        gt=0,
        description="Dead letters kept per city per period (topics outside the native tree "
        "share one such budget).",
    )
    dead_letter_bytes_per_city: int = Field(
        default=16 * 1024 * 1024, gt=0, description="Payload bytes kept per city per period."
    )
    dead_letters_per_bridge: int = Field(
        default=10_000,
        gt=0,
        description="Dead letters one bridge keeps per period, whatever their topics: city and "
        "device names in topics are the sender's choice, so this bounds the rest.",
    )
    dead_letter_bytes_per_bridge: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Payload bytes one bridge keeps per period."
    )

    # Quantities are stored as 64-bit millionths of their canonical unit: 9.2e12 units in any
    # stored sum. A year has at most 8,784 local hours, so a city's hours capped at 1e9 keep
    # every hour, day, month and year sum inside it.
    max_flow_quantity: float = Field(
        default=1e6,
        gt=0,
        le=1e9,
        description="Most one flow may carry, in its resource's canonical unit (kg, kWh, "
        "count, h, m3), after unit conversion. A larger one refuses its event.",
    )
    max_event_quantity: float = Field(
        default=1e7,
        gt=0,
        le=1e9,
        description="Most the flows of one event may carry together (canonical units).",
    )
    max_batch_quantity: float = Field(
        default=1e8,
        gt=0,
        le=1e9,
        description="Most the flows of one batch (an HTTP request, a bridge commit) may bring "
        "one city together; the events past it are refused, to be sent in another batch.",
    )
    max_meter_kw: float = Field(
        default=1000.0,
        gt=0,
        description="Most power a cumulative energy counter may show between two readings "
        "(kW): a rise past it over their interval (a forged or replaced meter) is not counted "
        "as use. Counters are read at intervals the sender chooses, so only a rate bounds "
        "what a run of readings and resets may add.",
    )
    max_window_quantity: float = Field(
        default=1e9,
        gt=0,
        le=1e9,
        description="Most the flows of one city in one local hour may carry together; events "
        "that would take an hour past it are refused.",
    )
    max_future_skew_s: float = Field(
        default=86400.0,
        ge=0,
        description="Most an event's `time` may lie ahead of the moment it is received, in "
        "seconds: a device's clock may run a little fast, but an event dated next year would "
        "count in a window that has not begun. Events further ahead are refused.",
    )

    auth: Literal["required", "off"] = Field(
        default="required",
        description="`required`: every API call but the operations endpoints and the docs needs "
        "a key (`Authorization: Bearer` or `X-API-Key`); `off`: no keys, everyone is admin "
        "(the embedded `fabcity up` and tests only).",
    )
    public_reads: bool = Field(
        default=False,
        description="Let callers without a key read what a planner of every city may read "
        "(metrics, the registry; nothing per key, nothing written). For a public dashboard.",
    )
    rate_limit_per_s: float = Field(
        default=50.0,
        ge=0,
        description="Requests per second per key (0: no limit). Shared through Redis when "
        "`worker_mode` is `celery` and Redis answers, else counted in each API process.",
    )
    rate_limit_burst: int = Field(
        default=200, gt=0, description="Requests a key may make at once above its rate."
    )
    auth_failure_burst: int = Field(
        default=20,
        gt=0,
        description="Failed key lookups (unknown, revoked or mistyped keys) one client address "
        "may make at once; past them every key from it is refused with 429 for a while.",
    )
    auth_failure_per_min: float = Field(
        default=10.0,
        ge=0,
        description="Failed key lookups per minute per client address once its burst is spent "
        "(0: no limit). Shared through Redis like `rate_limit_per_s`.",
    )

    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a webhook receiver may take to answer."
    )
    webhook_backoff_s: float = Field(
        default=1.0, gt=0, description="Wait after a first failed delivery; doubles each time."
    )
    webhook_backoff_max_s: float = Field(
        default=600.0, gt=0, description="Longest wait between delivery attempts."
    )
    webhook_settle_s: float = Field(
        default=5.0,
        ge=0,
        description="PostgreSQL only: events younger than this are not sent yet, so one that "
        "commits after a later-numbered one is never skipped by a subscription's cursor.",
    )


@lru_cache
def get_settings() -> Settings:
    # Containers may get credentials as files, one per setting and named as its variable
    # (`fabcity_mqtt_password`), in the directory FABCITY_SECRETS_DIR names (`fabcity
    # broker-config` writes them): unlike a variable, a file is not shown by `docker inspect`
    # nor inherited by child processes. Variables still win.
    secrets_dir = os.environ.get("FABCITY_SECRETS_DIR")
    return Settings(_secrets_dir=secrets_dir) if secrets_dir else Settings()
