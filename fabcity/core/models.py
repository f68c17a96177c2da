"""Tables. Events are the truth; flows and rollups can be rebuilt from them."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fabcity.core.sql import UtcDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class City(Base):
    __tablename__ = "cities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    timezone: Mapped[str] = mapped_column(String(64))
    population: Mapped[int | None] = mapped_column(BigInteger)
    retired_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime(), doc="Retired: kept for its events, refuses new ones."
    )


class Site(Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("city_id", "slug"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    city_id: Mapped[int] = mapped_column(ForeignKey("cities.id"))
    slug: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    retired_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime(), doc="Retired: kept for its events, refuses new ones."
    )


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("site_id", "slug"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    slug: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(50))
    adapter: Mapped[str] = mapped_column(String(50))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    online: Mapped[bool | None] = mapped_column(
        Boolean, doc="From the device's will/birth/status messages; null until one is seen."
    )
    last_seen: Mapped[datetime | None] = mapped_column(
        UtcDateTime(), doc="Receive time of the device's latest message."
    )
    retired_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime(), doc="Retired: kept for its events, refuses new ones."
    )
    # device listening (issue 17)
    listening_since: Mapped[datetime | None] = mapped_column(
        UtcDateTime(),
        doc="Since when the bridge takes the device's messages as it is now registered: its "
        "topics' subscription acknowledged, its printer link answering. Written by the bridge "
        "(another process than the API's, maybe); null while it does not.",
    )


# device listening (issue 17)
class RegistryVersion(Base):
    """One row whose `version` the database's own triggers (migration 0014) raise at every
    write to a device, or to the retirement of a site or city, whatever wrote it: the bridge
    reads this one number every half second to know when to read the registry again."""

    __tablename__ = "registry_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class RegistryChange(Base):
    """One change to a registry entry, kept for good: who, when, what it was and what it
    became, and how many windows it sent to be recomputed. A figure that moved because the
    registry changed can be traced to the change here."""

    __tablename__ = "registry_changes"
    __table_args__ = (Index("ix_registry_changes_city", "city_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    # No foreign keys: the log outlives what it describes (an entry deleted is logged too).
    city_id: Mapped[int | None] = mapped_column(Integer, doc="Null for a resource.")
    entry: Mapped[str] = mapped_column(
        String(16), doc="`city`, `site`, `device`, `statistics`, `resource`."
    )
    name: Mapped[str] = mapped_column(String(512), doc="`/{city}/{site}/{device}`, or a name.")
    action: Mapped[str] = mapped_column(String(16), doc="`create`, `update`, `retire`, `delete`.")
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="The fields changed, before.")
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="The same fields, after.")
    actor: Mapped[str] = mapped_column(String(200), doc="The key (`key 12`, role) or `cli`.")
    windows: Mapped[int] = mapped_column(Integer, doc="Hours sent to be recomputed.")


class Resource(Base):
    __tablename__ = "resources"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    unit: Mapped[str] = mapped_column(String(20))
    dimension: Mapped[str] = mapped_column(String(20))
    mfa_category: Mapped[str | None] = mapped_column(String(8))
    secondary: Mapped[bool] = mapped_column(Boolean, default=False)


class Event(Base):
    """One event as received, immutable. `time` is when it happened (receive time if absent)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "event_id"),
        # The reporting coverage of an hour is counted from this index alone.
        Index("ix_events_city_day_hour_site", "city_id", "day", "hour", "site_id"),
        # Meter counters are read in time order per device; other events need no such index.
        Index(
            "ix_events_device_time",
            "device_id",
            "time",
            postgresql_where=text("type = 'fabcity.meter.reading'"),
            sqlite_where=text("type = 'fabcity.meter.reading'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Compared byte by byte on PostgreSQL (collation "C"): every stored event is a search of
    # the unique index on (source, event_id), and a locale's collation (C.UTF-8 included)
    # compares each pair through strcoll; "C" compares with memcmp. Equality is bytewise under
    # any deterministic collation, and the order is UTF-8's byte order, that of code points,
    # as SQLite's and Python's: C.UTF-8 sorts the same (migration 0020).
    source: Mapped[str] = mapped_column(
        String(512).with_variant(String(512, collation="C"), "postgresql")
    )
    event_id: Mapped[str] = mapped_column(
        String(256).with_variant(String(256, collation="C"), "postgresql")
    )
    type: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # No foreign keys: ingest resolves every source against the registry in the transaction
    # that stores the event, and nothing deletes cities, sites or devices. Their checks cost
    # PostgreSQL 16 us of CPU per event, nearly half its work on the ingest path (measured:
    # COPY into `events` 34 us/row with them, 18.5 without).
    city_id: Mapped[int] = mapped_column(Integer)
    site_id: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[int | None] = mapped_column(Integer)
    day: Mapped[date] = mapped_column(Date, doc="Local date of `time` in the city's time zone.")
    hour: Mapped[int] = mapped_column(
        Integer,
        doc="The real hour of `time` within its local day: the clock hour, 0-23, or 24-47 for "
        "the second pass of an hour the clock repeats (`calendar.hour_key`).",
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class Correction(Base):
    """An event that corrects another of the same source: a retraction (`fabcity.event.retracted`)
    or a replacement (an event with `supersedes`). Both events stay stored as they came; this row
    says which counts. Of an original and its corrections only one counts: the original while
    it has none, else its newest correction (highest `rank`) if that is a replacement, else
    none. Ingest keeps the flows to that rule and a rebuild derives by it, so they agree."""

    __tablename__ = "corrections"
    __table_args__ = (
        # A correction is ranked under a lock on its original: one order, no ties.
        UniqueConstraint("target_pk", "rank"),
        Index("ix_corrections_city", "city_id"),
    )

    event_pk: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False, doc="The correction's event."
    )
    city_id: Mapped[int] = mapped_column(Integer)
    target_pk: Mapped[int] = mapped_column(BigInteger, doc="The event it corrects.")
    kind: Mapped[str] = mapped_column(String(10), doc="`retract` or `supersede`.")
    rank: Mapped[int] = mapped_column(Integer, doc="1 for an original's first correction, …")
    reason: Mapped[str | None] = mapped_column(String(500))


# Quantities are stored as integers in millionths of the resource's canonical unit (mg, mWh,
# 3.6 ms): sums of integers are exact and do not depend on the order rows are added, so an
# incremental recompute and a rebuild give the same rollups to the last digit.
MICRO = 1_000_000


class Flow(Base):
    """A flow derived from an event, in millionths of the resource's canonical unit."""

    __tablename__ = "flows"
    __table_args__ = (
        # Recomputes read one (city, day, hour) at a time.
        Index("ix_flows_city_day_hour", "city_id", "day", "hour"),
        # A design's windows are found again when its registered mass or licence changes.
        Index(
            "ix_flows_design_url",
            "design_url",
            postgresql_where=text("design_url IS NOT NULL"),
            sqlite_where=text("design_url IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign keys: flows are derived data that only the ingest path writes, right after
    # the event they come from; each key check costs an index probe per flow on the hot path.
    event_pk: Mapped[int] = mapped_column(BigId)
    city_id: Mapped[int] = mapped_column(Integer)
    site_id: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[int] = mapped_column(Integer, doc="0 when a site reported it.")
    day: Mapped[date] = mapped_column(Date, doc="Local date in the city's time zone.")
    hour: Mapped[int] = mapped_column(Integer, doc="Its event's hour key (`Event.hour`).")
    action: Mapped[str] = mapped_column(String(16))
    resource: Mapped[str] = mapped_column(String(100))
    amount: Mapped[int] = mapped_column(BigInteger, doc="Millionths of the canonical unit.")
    ring: Mapped[str] = mapped_column(String(8))
    fate: Mapped[str] = mapped_column(String(16), doc="Empty when the flow has none.")
    recycled: Mapped[bool] = mapped_column(Boolean)
    material: Mapped[str | None] = mapped_column(String(100))
    design_url: Mapped[str | None] = mapped_column(Text)
    job: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(10))
    weighed: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default=false(),
        doc="A count whose mass was weighed and is carried by its own mass flow of the same "
        "event: no design's mass is modelled for it.",
    )


class DirtyWindow(Base):
    """A (city, day, hour) whose rollups must be recomputed from all its flows: flows were
    changed or removed (a meter reading arrived out of order), or a design's registered data
    changed. New events do not mark windows: they are added (`PendingRollup`). Marks
    coalesce: one row each.

    An hour, not a day: a recompute then reads one hour of flows, so its cost follows the new
    data, not the volume of a busy day."""

    __tablename__ = "dirty_windows"

    city_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    hour: Mapped[int] = mapped_column(Integer, primary_key=True)


class PendingRollup(Base):
    """Stored events and flows of one city not yet added to the rollups: a batch's share of
    one city, as ranges of ids that only that batch's rows hold (ingest draws a block of ids
    per batch). A recompute adds their sums to the rollups (`rollups.apply`), so its cost
    follows the new rows, not the rows an hour already holds. A flow is in the mark when its
    id and its event's id both fall in the ranges and its city is the mark's."""

    __tablename__ = "rollup_pending"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    city_id: Mapped[int] = mapped_column(Integer)
    event_lo: Mapped[int] = mapped_column(BigInteger)
    event_hi: Mapped[int] = mapped_column(BigInteger)
    flow_lo: Mapped[int | None] = mapped_column(BigInteger, doc="None: the events made no flows.")
    flow_hi: Mapped[int | None] = mapped_column(BigInteger)


class _FlowCube:
    """Sums of flows along every dimension a metric or a breakdown needs.

    Every metric of a longer window or a coarser breakdown is a sum over these rows, so
    ratios are taken of sums, never averaged.
    """

    city_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(16), primary_key=True)
    resource: Mapped[str] = mapped_column(String(100), primary_key=True)
    ring: Mapped[str] = mapped_column(String(8), primary_key=True)
    fate: Mapped[str] = mapped_column(String(16), primary_key=True)
    recycled: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    design: Mapped[str] = mapped_column(
        String(12), primary_key=True, doc="'' none, 'open', 'closed', 'unregistered' or 'unknown'."
    )
    state: Mapped[str] = mapped_column(String(10), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    design_mass: Mapped[int] = mapped_column(
        BigInteger, doc="Millionths of kg: count × the registered design's mass (modelled)."
    )
    design_mass_flows: Mapped[int] = mapped_column(Integer, doc="Flows whose mass is modelled.")
    flows: Mapped[int] = mapped_column(Integer)


class FlowRollup(_FlowCube, Base):
    __tablename__ = "rollup_flows_day"


class FlowRollupHour(_FlowCube, Base):
    __tablename__ = "rollup_flows_hour"

    hour: Mapped[int] = mapped_column(Integer, primary_key=True)


class SiteActivity(Base):
    """Events per site and local hour: the reporting coverage."""

    __tablename__ = "rollup_sites_hour"

    city_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    hour: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    events: Mapped[int] = mapped_column(Integer)


class FlowRollupMonth(_FlowCube, Base):
    """Months summed from their days (`day` is the month's first): a year's summary reads
    twelve rows per cell instead of 365."""

    __tablename__ = "rollup_flows_month"


class _CityFlowCube:
    """A city's flows summed over its sites and devices: `_FlowCube` without `site_id` and
    `device_id`. A year of a city by day is ~2 rows a day here against ~40 (20 sites) there, so
    the series that do not break a city down by site or device read these (fabcity.read.series).
    Kept by the same recompute as the cube it sums, in the same transaction."""

    city_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    action: Mapped[str] = mapped_column(String(16), primary_key=True)
    resource: Mapped[str] = mapped_column(String(100), primary_key=True)
    ring: Mapped[str] = mapped_column(String(8), primary_key=True)
    fate: Mapped[str] = mapped_column(String(16), primary_key=True)
    recycled: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    design: Mapped[str] = mapped_column(String(12), primary_key=True)
    state: Mapped[str] = mapped_column(String(10), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    design_mass: Mapped[int] = mapped_column(BigInteger)
    design_mass_flows: Mapped[int] = mapped_column(Integer)
    flows: Mapped[int] = mapped_column(Integer)


class CityFlowRollup(_CityFlowCube, Base):
    __tablename__ = "rollup_city_flows_day"


class CityFlowRollupHour(_CityFlowCube, Base):
    __tablename__ = "rollup_city_flows_hour"
    # The hour after the day: a city's hours are read by a range of days (a week's 168 hours).
    __table_args__ = (
        PrimaryKeyConstraint("city_id", "day", "hour", "action", "resource", "ring", "fate",
                             "recycled", "design", "state"),
    )  # fmt: skip

    hour: Mapped[int] = mapped_column(Integer, primary_key=True)


class CityFlowRollupMonth(_CityFlowCube, Base):
    __tablename__ = "rollup_city_flows_month"


class SiteActivityDay(Base):
    """Events per site and local day, summed from the hours: a year's coverage is 365 rows
    per site instead of 8,760."""

    __tablename__ = "rollup_sites_day"

    city_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    events: Mapped[int] = mapped_column(Integer)


class SiteActivityMonth(Base):
    """Events per site and local month (`day` is the month's first), summed from the days:
    comparing ten cities over a year by month reads 2,400 rows instead of 73,000."""

    __tablename__ = "rollup_sites_month"

    city_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    site_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    events: Mapped[int] = mapped_column(Integer)


class CityStatistics(Base):
    """A year of official statistics a city uploads (EW-MFA table, population, GDP, CMU inputs,
    sectors). Kept as posted, numbers as decimal strings so large tonnages stay exact."""

    __tablename__ = "city_statistics"

    city_id: Mapped[int] = mapped_column(ForeignKey("cities.id"), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DeadLetter(Base):
    """What could not become an event, with the reason, kept for an operator to replay.

    `payload` holds at most a bounded prefix of what was received (a refused message may be
    as large as the broker allows); `payload_size` and `payload_sha256` describe the whole.
    """

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    channel: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str | None] = mapped_column(String(1024))
    payload: Mapped[bytes] = mapped_column(LargeBinary, doc="The payload, or its first bytes.")
    # Both default to the payload's when a row is made with the whole payload (only
    # `fabcity.ingest.deadletters.dead_letter` cuts it, and it sets them).
    payload_size: Mapped[int] = mapped_column(
        BigInteger,
        default=lambda ctx: len(ctx.get_current_parameters()["payload"]),
        doc="Bytes received.",
    )
    # Indexed: a refused message seen again (a retained one after each restart) is found by it.
    payload_sha256: Mapped[str] = mapped_column(
        String(64),
        default=lambda ctx: hashlib.sha256(ctx.get_current_parameters()["payload"]).hexdigest(),
        index=True,
        doc="SHA-256 of the whole payload, hex.",
    )
    reason: Mapped[str] = mapped_column(Text, doc="Why it was refused when received.")
    # What an MQTT 5 PUBLISH carried besides its payload: a CloudEvent in binary mode has its
    # attributes in the user properties, so without them a replay would read no event at all.
    properties: Mapped[list[list[str]] | None] = mapped_column(
        JSON, doc="MQTT 5 user properties as [name, value] pairs, in order (names may repeat)."
    )
    content_type: Mapped[str | None] = mapped_column(
        Text, doc="MQTT 5 content type of the PUBLISH."
    )
    # Replays are kept apart from `reason`: the reason it was refused when it came is the
    # evidence, and a failed replay (a bug in the replay, a device still unknown) must not
    # overwrite it.
    replays: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="Replays that did not let it through."
    )
    last_replay_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime(), doc="When it was last replayed."
    )
    last_replay_outcome: Mapped[str | None] = mapped_column(
        Text, doc="Why the last replay still refused it."
    )

    @property
    def truncated(self) -> bool:
        """Only a prefix was kept: the letter cannot be replayed."""
        return self.payload_size > len(self.payload)


class Design(Base):
    """An open design read from an Open Know-How manifest (OKH v1 YAML or OKH-LOSH TOML).

    Flows name a design by its manifest URL (`flows.design_url`), so `url` is the join key:
    a count of things made of a design times `mass_kg` is a modelled mass.
    """

    __tablename__ = "designs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True, doc="The manifest's URL.")
    title: Mapped[str] = mapped_column(String(300))
    version: Mapped[str | None] = mapped_column(String(100))
    licence: Mapped[str | None] = mapped_column(
        String(200), doc="SPDX licence expression of the hardware; null when none maps."
    )
    licence_text: Mapped[str | None] = mapped_column(
        String(500), doc="The hardware licence as the manifest wrote it."
    )
    licensor: Mapped[str | None] = mapped_column(String(300))
    is_open: Mapped[bool | None] = mapped_column(
        Boolean,
        doc="Every licence of the design is an open hardware or open source licence; null "
        "when a licence is missing or cannot be read.",
    )
    oshwa_uid: Mapped[str | None] = mapped_column(
        String(32), doc="OSHWA certification id, e.g. `US002173`."
    )
    mass_kg: Mapped[float | None] = mapped_column(Float, doc="Mass of one product, kg.")
    parts: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, doc="`[{name, mass_kg}]`; `mass_kg` null when the manifest omits it."
    )
    circularity: Mapped[dict[str, float] | None] = mapped_column(
        JSON, doc="Material Circularity Indicator inputs (F_R, F_U, …, U_ratio) when given."
    )
    standard: Mapped[str] = mapped_column(String(16), doc="`okh-v1` or `okh-losh`.")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Facility(Base):
    """What an Open Know-Where record says about a site, beyond the site's own columns.

    `okw_id` is the record's stable key (its `id` or URL, else a slug of its name), so a
    re-import updates the site it created before instead of adding another.
    """

    __tablename__ = "okw_facilities"
    __table_args__ = (UniqueConstraint("city_id", "okw_id"),)

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    city_id: Mapped[int] = mapped_column(ForeignKey("cities.id"))
    okw_id: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str | None] = mapped_column(String(32), doc="OKW `facility_status`.")
    access_type: Mapped[str | None] = mapped_column(String(40), doc="OKW `access_type`.")
    address: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    equipment: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    materials: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    verified_by: Mapped[str | None] = mapped_column(String(300))
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    record_data: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, doc="The record's own provenance (`record_data`), as given."
    )
    imported_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Subscription(Base):
    """A webhook that follows stored events (and metric updates) as CloudEvents.

    Delivery reads the events table from a cursor: nothing is written per event at ingest.
    """

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    city_id: Mapped[int | None] = mapped_column(ForeignKey("cities.id"), doc="Null: every city.")
    types: Mapped[list[str]] = mapped_column(JSON, default=list, doc="Empty: every type.")
    mode: Mapped[str] = mapped_column(String(12), doc="`structured` or `batch`.")
    batch_size: Mapped[int] = mapped_column(Integer)
    event_cursor: Mapped[int] = mapped_column(BigInteger, doc="Last `events.id` delivered.")
    notice_cursor: Mapped[int] = mapped_column(BigInteger, doc="Last `notices.id` delivered.")
    failures: Mapped[int] = mapped_column(Integer, default=0, doc="Failed attempts in a row.")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    leased_until: Mapped[datetime | None] = mapped_column(
        UtcDateTime(), doc="A sender holds it until then; one sender keeps order."
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Notice(Base):
    """A metric update to announce: the windows of a city that were recomputed."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    city_id: Mapped[int] = mapped_column(ForeignKey("cities.id"))
    type: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Delivery(Base):
    """One attempt to deliver a run of events or notices to a subscription."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_subscription", "subscription_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    attempted_at: Mapped[datetime] = mapped_column(UtcDateTime())
    stream: Mapped[str] = mapped_column(String(8), doc="`events` or `notices`.")
    first_id: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, doc="1 for a first try, then 2, 3, …")
    status_code: Mapped[int | None] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)


class DeviceState(Base):
    """What a device adapter remembers between messages (counters, merged deltas, aliases).

    Saved in the transaction that stores the events the state led to.
    """

    __tablename__ = "device_state"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ApiKey(Base):
    """A credential: its secret is shown once and only its SHA-256 is kept (a random key of 256
    bits needs no slow hash). A device key also keeps the broker's PBKDF2 form of the secret,
    so `fabcity broker-config` can write Mosquitto's password file without knowing it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lookup: Mapped[str] = mapped_column(
        String(16), unique=True, doc="The public part of the key; also its MQTT user name."
    )
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(63))
    site: Mapped[str | None] = mapped_column(String(63))
    device: Mapped[str | None] = mapped_column(String(63))
    name: Mapped[str | None] = mapped_column(String(200))
    mqtt_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    replaced_by: Mapped[int | None] = mapped_column(Integer, doc="The key a rotation made.")


class Target(Base):
    """A city's goal for one metric: at least (or at most) `value` by `due`, as a planner set
    it; the dashboard draws it against the series, with the gap."""

    __tablename__ = "targets"
    __table_args__ = (UniqueConstraint("city_id", "metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    city_id: Mapped[int] = mapped_column(ForeignKey("cities.id"))
    metric: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8), doc="`at_least` or `at_most`.")
    value: Mapped[float] = mapped_column(Float)
    due: Mapped[date] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(String(500))
    set_by: Mapped[int | None] = mapped_column(Integer, doc="The key that set it, if any.")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RollupChange(Base):
    """When the rollups of a city's local hour last changed (rebuilt, added to, or filled):
    NGSI-LD's `dateModified`, read without touching the events."""

    __tablename__ = "rollup_changes"

    city_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    hour: Mapped[int] = mapped_column(Integer, primary_key=True)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime())
