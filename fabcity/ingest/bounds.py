"""How much one flow, one event, one batch and one city's hour may carry, and how far ahead
of now an event may be dated.

Quantities are stored as 64-bit integers in millionths of their resource's canonical unit, and
the rollups add them up: an hour's row, a day's, a month's. Past 9.2e12 units a sum no longer
fits, and the recompute that adds it fails. The schema's bound on one quantity (1e9) does not
prevent that: a thousand flows of 1e9 kg in ten events do. So ingest bounds the sums as well,
and refuses (by index, with the reason) the events that would go past them:

- a flow: `max_flow_quantity`, after unit conversion;
- an event's flows together: `max_event_quantity`;
- a batch's flows into one city together: `max_batch_quantity`, counted in the batch's order;
- a city's flows in one local hour: `max_window_quantity`. A year has at most 8,784 hours, so
  at the default 1e9 a whole year of full hours (8.8e12) still fits in the 9.2e12 a stored
  sum may hold.

Bounds are in canonical units whatever the resource: they bound numbers, not mass.

An event's `time` is read as RFC 3339 with an offset (`schemas.events`, `schemas.fast`) and
must fall within years 1 to 9999 in UTC (`fabcity.ingest.service`); past that, it may lie at
most `max_future_skew_s` ahead of the moment it is received (`check_time`). A device's clock
may run a little fast, but an event dated 2030 would sit in a window that has not begun, and
make today's figures look finished. HTTP and MQTT (adapters' events too) meet the bound here,
in the one ingest path, and a refusal names the event's index and why.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from fabcity.core import calendar
from fabcity.core.errors import Invalid
from fabcity.core.models import MICRO, Flow
from fabcity.core.settings import Settings, get_settings
from fabcity.flows.derive import DerivedFlow
from fabcity.ingest.store import Ready
from fabcity.rollups.windows import Window
from schemas.api import Rejected

# The window's stored sum is read only for a batch that brings more than this share of the
# window's bound into it. Why that is enough: a batch below it adds less than bound / 1e5
# (1e4 units at the default) to an hour unchecked; overflowing the month row that sums the
# hours (9.2e12 units) with such batches alone takes 9.2e8 batches into one city within the
# month, 355 a second for 30 days, seven times what one key may send at the default rate
# limit (50/s). Real batches stay below it (a lab's thousand events of a kilogram or two;
# the benchmarks' batches of 1 kg flows), so the common path costs no query and no pass over
# the batch; a batch large enough to matter pays one indexed sum over its hours' flows.
_CHECK_SHARE = 100_000


@dataclass(frozen=True)
class Bounds:
    """The bounds in millionths of a canonical unit, as flows store their amounts."""

    flow: int
    event: int
    batch: int
    window: int
    # How far ahead of its receipt an event's time may lie (`Settings.max_future_skew_s`).
    future_skew: timedelta = timedelta(days=1)

    @classmethod
    def of(cls, settings: Settings) -> Bounds:
        return cls(
            round(settings.max_flow_quantity * MICRO),
            round(settings.max_event_quantity * MICRO),
            round(settings.max_batch_quantity * MICRO),
            round(settings.max_window_quantity * MICRO),
            timedelta(seconds=settings.max_future_skew_s),
        )

    @classmethod
    def default(cls) -> Bounds:
        return cls.of(get_settings())

    @property
    def check_window_above(self) -> int:
        return self.window // _CHECK_SHARE


def _units(amount: int) -> str:
    return f"{amount / MICRO:g}"


def check_time(when: datetime, received_at: datetime, bounds: Bounds) -> None:
    """`Invalid` when `when` lies more than the skew ahead of `received_at` (both aware;
    `when` as sent, so the reason shows the sender's own offset)."""
    ahead = when - received_at
    if ahead > bounds.future_skew:
        raise Invalid(
            f"time: {when.isoformat()} is {_duration(ahead)} ahead of when the event was "
            f"received ({received_at.isoformat(timespec='seconds')}); at most "
            f"{_duration(bounds.future_skew)} ahead is accepted: check the sender's clock"
        )


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= length or unit == "second":
            count = round(seconds / length, 1)
            # 2.5e+06 would be `:g`'s way of saying an event dated in the year 9000
            number = f"{count:,.0f}" if count >= 100 else f"{count:g}"
            return f"{number} {unit}{'' if count == 1 else 's'}"
    raise AssertionError("unreachable")


def check_event(flows: Sequence[DerivedFlow], carried: bool, bounds: Bounds) -> int:
    """The event's flows' total (millionths); `Invalid`, naming the flow, past a bound.
    `carried`: the flows are the event's own `data` (named by their index there). Amounts are
    never negative (the schema bounds quantities below by 0)."""
    # On every event's path: the usual single flow costs two comparisons.
    if len(flows) == 1:
        total = flows[0][2]
        if total <= bounds.flow and total <= bounds.event:
            return total
    else:
        amounts = [f[2] for f in flows]
        total = sum(amounts)
        if max(amounts) <= bounds.flow and total <= bounds.event:
            return total
    for i, f in enumerate(flows):
        if f.amount > bounds.flow:
            where = (f"data[{i}]" if len(flows) > 1 else "data") if carried else "derived"
            raise Invalid(
                f"{where}: {_units(f.amount)} {f.resource} (in its canonical unit) is more "
                f"than one flow may carry, at most {_units(bounds.flow)}"
            )
    raise Invalid(
        f"data: the event's flows carry {_units(total)} (canonical units) together, more "
        f"than one event may, at most {_units(bounds.event)}"
    )


def check_batch(
    session: Session, ready: list[Ready], totals: dict[int, int], bounds: Bounds
) -> tuple[list[Ready], list[Rejected]]:
    """The events of the batch that keep it and each city's hours within the bounds, and the
    others refused. `totals`: each event's total by its index (`check_event`)."""
    whole = sum(totals.values())
    if whole <= bounds.check_window_above and whole <= bounds.batch:
        return ready, []  # the usual batch: no bound can come near through it
    kept: list[Ready] = []
    refused: list[Rejected] = []
    # Per city: a bridge commits the messages of many cities in one batch, and one city's
    # sender must not use up what the others may bring.
    batch: dict[int, int] = defaultdict(int)
    for item in ready:
        total = totals.get(item.index, 0)
        city_id = item.origin.city_id
        if total and batch[city_id] + total > bounds.batch:
            refused.append(
                Rejected(
                    index=item.index,
                    error="the batch's flows for this city up to this event carry more than one "
                    f"batch may, at most {_units(bounds.batch)} (canonical units); send it in "
                    "another batch",
                )
            )
            continue
        batch[city_id] += total
        kept.append(item)
    brought: dict[Window, int] = defaultdict(int)
    for item in kept:
        brought[(item.origin.city_id, item.day, item.hour)] += totals.get(item.index, 0)
    large = [w for w, amount in brought.items() if amount > bounds.check_window_above]
    if not large:
        return kept, refused
    held = _stored(session, large)
    out: list[Ready] = []
    for item in kept:
        window = (item.origin.city_id, item.day, item.hour)
        total = totals.get(item.index, 0)
        if window in held and total:
            if held[window] + total > bounds.window:
                refused.append(
                    Rejected(
                        index=item.index,
                        error=f"the hour from {_label(item)} of this event's city "
                        f"would hold more than {_units(bounds.window)} (canonical units) of "
                        "flows, the most one city's hour may",
                    )
                )
                continue
            held[window] += total
        out.append(item)
    return out, refused


def _stored(session: Session, hours: list[Window]) -> dict[Window, int]:
    """What the flows stored in each (city, day, hour) carry together (millionths)."""
    by_day: dict[tuple[int, date], list[int]] = defaultdict(list)
    for city_id, day, hour in hours:
        by_day[(city_id, day)].append(hour)
    query = (
        select(Flow.city_id, Flow.day, Flow.hour, func.sum(Flow.amount))
        .where(
            or_(
                *(
                    and_(Flow.city_id == c, Flow.day == d, Flow.hour.in_(hs))
                    for (c, d), hs in by_day.items()
                )
            )
        )
        .group_by(Flow.city_id, Flow.day, Flow.hour)
    )
    held = dict.fromkeys(hours, 0)
    for city_id, day, hour, amount in session.execute(query):
        held[(city_id, day, hour)] = int(amount)
    return held


def _label(item: Ready) -> str:
    """The start of the event's hour in its city, with its offset: an hour the clock
    repeats is two hours, told apart by it."""
    hour = calendar.hour_at(item.time, ZoneInfo(item.origin.timezone))
    return hour.start.isoformat(timespec="minutes")
