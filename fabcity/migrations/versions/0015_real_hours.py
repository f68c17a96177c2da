"""real hours: the second pass of an hour the clock repeats is a window of its own

An event's `hour` was its local clock hour, so when the clocks go back the two passes of the
repeated hour fell in one window (Europe/Madrid, 2026-10-25: 02:30+02:00 and 02:30+01:00 both
in hour 2). It is now the clock hour for the first pass and 24 more for the second
(`fabcity.core.calendar.hour_key`). Every other hour keeps its key, so only the events of the
days the clocks went back move, with their flows; the hours they leave and enter are marked
dirty, and the recompute rebuilds them from their flows (their days and months do not change:
the events stay in their local day).

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The key of a second pass (as `fabcity.core.calendar.SECOND_PASS`; kept here so that this
# migration does what it did when it was written).
SECOND_PASS = 24

_events = sa.table(
    "events",
    sa.column("id", sa.BigInteger()),
    sa.column("city_id", sa.Integer()),
    sa.column("day", sa.Date()),
    sa.column("hour", sa.Integer()),
    sa.column("time", sa.DateTime(timezone=True)),
)
_flows = sa.table(
    "flows",
    sa.column("event_pk", sa.BigInteger()),
    sa.column("city_id", sa.Integer()),
    sa.column("day", sa.Date()),
    sa.column("hour", sa.Integer()),
)
_MARK = sa.text(
    "INSERT INTO dirty_windows (city_id, day, hour) VALUES (:c, :d, :h) ON CONFLICT DO NOTHING"
)


def _clocks_go_back(day: date, zone: ZoneInfo) -> bool:
    """The day is longer than 24 hours: some of its clock time passes twice."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    after = day + timedelta(days=1)
    end = datetime(after.year, after.month, after.day, tzinfo=zone).astimezone(UTC)
    return end - start > timedelta(hours=24)


def upgrade() -> None:
    bind = op.get_bind()
    for city_id, timezone in bind.execute(sa.text("SELECT id, timezone FROM cities")).all():
        zone = ZoneInfo(timezone)
        days = bind.execute(
            sa.select(_events.c.day).where(_events.c.city_id == city_id).distinct()
        ).scalars()
        for day in [d for d in days if _clocks_go_back(d, zone)]:
            rows = bind.execute(
                sa.select(_events.c.id, _events.c.time, _events.c.hour).where(
                    _events.c.city_id == city_id, _events.c.day == day
                )
            ).all()
            moved: dict[int, list[int]] = {}
            for pk, time, hour in rows:
                # SQLite hands back the naive UTC time it stored.
                local = (time if time.tzinfo else time.replace(tzinfo=UTC)).astimezone(zone)
                key = local.hour + SECOND_PASS * local.fold
                if key != hour:
                    moved.setdefault(key, []).append(pk)
                    bind.execute(_MARK, {"c": city_id, "d": day, "h": hour})
                    bind.execute(_MARK, {"c": city_id, "d": day, "h": key})
            for key, pks in moved.items():
                for part in range(0, len(pks), 1000):
                    ids = pks[part : part + 1000]
                    bind.execute(_events.update().where(_events.c.id.in_(ids)).values(hour=key))
                    bind.execute(
                        _flows.update()
                        .where(
                            _flows.c.city_id == city_id,
                            _flows.c.day == day,
                            _flows.c.event_pk.in_(ids),
                        )
                        .values(hour=key)
                    )


def downgrade() -> None:
    bind = op.get_bind()
    second = bind.execute(
        sa.text(
            "SELECT DISTINCT city_id, day, hour FROM events WHERE hour >= :n "
            "UNION SELECT city_id, day, hour FROM rollup_flows_hour WHERE hour >= :n "
            "UNION SELECT city_id, day, hour FROM rollup_sites_hour WHERE hour >= :n"
        ),
        {"n": SECOND_PASS},
    ).all()
    for table in ("events", "flows"):
        bind.execute(
            sa.text(f"UPDATE {table} SET hour = hour - :n WHERE hour >= :n"), {"n": SECOND_PASS}
        )
    for table in ("rollup_flows_hour", "rollup_sites_hour", "dirty_windows"):
        bind.execute(sa.text(f"DELETE FROM {table} WHERE hour >= :n"), {"n": SECOND_PASS})
    # The first pass's hour is rebuilt holding both again.
    for city_id, day, hour in second:
        bind.execute(_MARK, {"c": city_id, "d": day, "h": hour - SECOND_PASS})
