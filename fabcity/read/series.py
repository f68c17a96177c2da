"""Metric series as JSON, fast: a year by day by site is 29,200 points.

Computing each point from its cells in Python, then building a pydantic `Point` of it, cost
~40 µs a point: over a second for a year by day by site (docs/query-benchmark.md). Here the
metrics that are sums of one class of cells, or shares of such a sum (`metrics.Additive`), are
added up per window and group in SQL, one row per window and group, and Python keeps the
ratios; the JSON is written from byte fragments made once per window (its start, coverage,
confidence), not from models.
The other metrics (MFA accounts, DIDO, FCI, utilization, ...) are each a formula of sums of
classes of cells (`metrics.FromTotals`): the sums are read in the same query, and the
formula computes each window's value from them, as it does from cells (a `Value` a window,
~10 µs for FCI where its cells took ~40). Only utilization by the hour is still computed
from cells (`_from_totals` says why).

The bytes are those of `json_of(queries.metric_series(...))`, to the last digit: sums of
integers are exact, the ratios are taken of the same floats, and a test compares the two on
SQLite and PostgreSQL (tests/fabcity/read/test_series.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from itertools import chain
from typing import Any

import orjson
import psycopg
from pydantic import TypeAdapter
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    Integer,
    and_,
    bindparam,
    case,
    cast,
    distinct,
    func,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import Session

from fabcity.core import calendar
from fabcity.core.calendar import Interval
from fabcity.core.models import (
    MICRO,
    CityFlowRollup,
    CityFlowRollupHour,
    CityFlowRollupMonth,
    Device,
    FlowRollup,
    FlowRollupHour,
    FlowRollupMonth,
    Resource,
    Site,
)
from fabcity.read import metrics, queries
from fabcity.read.metrics import Additive, FromTotals, GroupBy, Sum, Value, WindowFacts
from fabcity.read.queries import Frame, Start

STATES = ("measured", "reported", "modelled")  # by rank: the weakest is the highest
# A window's sums of a group, where `_Sums` says: per class its amount and the rank of its
# weakest state (null: no cell of it), a share's part its amount alone, then the counts of
# machines. None: no rollup row at all.
Row = Sequence[int | None] | None
_START: TypeAdapter[datetime | date] = TypeAdapter(datetime | date)  # `api.Point.start`
_DUMPS = orjson.dumps


def series_json(
    session: Session,
    city_slug: str,
    names: list[str],
    first: date | None,
    last: date | None,
    interval: Interval,
    group_by: GroupBy | None,
    now: datetime | None = None,
    site: str | None = None,
) -> bytes:
    """The JSON of `queries.metric_series` with the same arguments."""
    f = queries.frame(session, city_slug, first, last, interval, now, site)
    sums = _Sums(names, interval)
    found = _read_sums(session, [f], interval, group_by, sums) if sums.read else {}
    out: list[bytes] = []
    _response(out, session, f, names, interval, group_by, sums, found.get(f.city.id, {}))
    return b"".join(out)


def compare_json(
    session: Session,
    slugs: list[str],
    names: list[str],
    first: date | None,
    last: date | None,
    interval: Interval,
) -> bytes:
    """The JSON of `reports.Comparison`: each city's series, in its own time zone; the
    sums of every city read in one query."""
    frames = queries.frames(session, slugs, first, last, interval)
    sums = _Sums(names, interval)
    found = _read_sums(session, frames, interval, None, sums) if sums.read else {}
    out = [
        b'{"names":',
        _DUMPS(names),
        b',"interval":',
        _DUMPS(interval),
        b',"from":',
        _DUMPS(first),
        b',"to":',
        _DUMPS(last),
        b',"cities":[',
    ]
    for k, f in enumerate(frames):
        if k:
            out.append(b",")
        _response(out, session, f, names, interval, None, sums, found.get(f.city.id, {}))
    out.append(b"]}")
    return b"".join(out)


def _additive(names: list[str]) -> dict[str, Additive]:
    return {n: m for n in names if isinstance(m := metrics.METRICS[n].compute, Additive)}


def _from_totals(names: list[str], interval: Interval) -> dict[str, FromTotals]:
    """The metrics computed from sums read in SQL. Not by the hour those that count machines:
    a count of machines is added up across rows only where they are of different machines,
    and an hour keyed in another time zone (`_slot`) may hold the same ones again."""
    return {
        n: m
        for n in names
        if isinstance(m := metrics.METRICS[n].compute, FromTotals)
        and not (m.counts and interval == "hour")
    }


def _response(
    out: list[bytes],
    session: Session,
    f: Frame,
    names: list[str],
    interval: Interval,
    group_by: GroupBy | None,
    sums: _Sums,
    found: dict[Any, list[Row]],
) -> None:
    """One city's `api.MetricsResponse`, its sums read (`_read_sums`), written to `out` as
    fragments: the answer is joined once, where joining each series, then the series, copied
    a 5.8 MB answer twice more (5 ms of a year by day by site)."""
    windows = _Windows(f)
    additive, from_totals = sums.additive, sums.from_totals
    groups = None
    from_cells = [n for n in names if n not in additive and n not in from_totals]
    if from_cells:
        groups = queries.cell_groups(session, f, interval, group_by, from_cells)
    totals: dict[str | None, list[_RowTotals]] = {}
    keys: list[str | None] = [None]
    if group_by is not None:
        keys = [*sorted({k for k in (*found, *(groups or ())) if k is not None})]
    out += (
        b'{"city":',
        _DUMPS(f.city.slug),
        b',"interval":',
        _DUMPS(interval),
        b',"timezone":',
        _DUMPS(f.city.timezone),
        b',"group_by":',
        _DUMPS(group_by),
        b',"series":[',
    )
    first = True
    for name in names:
        unit = metrics.METRICS[name].unit
        for key in keys:
            out += (
                b'{"name":' if first else b',{"name":',
                _DUMPS(name),
                b',"unit":',
                _DUMPS(unit),
                b',"key":',
                _DUMPS(key),
                b',"points":[',
            )
            first = False
            if name in additive:
                rows = found.get(key) or [None] * len(f.starts)
                _additive_points(out, additive[name], sums, rows, windows)
            elif name in from_totals:
                if key not in totals:
                    rows = found.get(key) or [None] * len(f.starts)
                    totals[key] = [_RowTotals(row, sums) for row in rows]
                _totals_points(out, from_totals[name], totals[key], windows)
            else:
                by_start = (groups or {}).get(key, {})
                _cell_points(out, name, by_start, windows)
            out.append(b"]}")
    out.append(b"]}")


# Writing points ---------------------------------------------------------------------------


class _Windows:
    """A frame's windows as the byte fragments every point of a window shares, in the order
    of `api.Point`'s fields: start, value, state, reason, terms, range, confidence, partial,
    coverage."""

    def __init__(self, f: Frame) -> None:
        self.starts = f.starts
        self.facts = f.facts
        starts = [_START.dump_python(s, mode="json") for s in f.starts]
        self.heads = [b'{"start":' + _DUMPS(s) + b',"value":' for s in starts]
        self.ends = [
            b',"partial":'
            + (b"true" if ctx.partial else b"false")
            + b',"coverage":'
            + _DUMPS(
                {
                    "events": ctx.events,
                    "sites_reporting": ctx.sites_reporting,
                    "sites_active": ctx.sites_active,
                }
            )
            + b"},"
            for ctx in f.facts
        ]
        # A recorded value without a range: its confidence is the window's.
        sure = Value(0.0, "measured")
        self.sure = [
            b'","reason":null,"terms":null,"range":null,"confidence":'
            + _DUMPS(metrics.confidence(sure, ctx))
            + end
            for ctx, end in zip(f.facts, self.ends, strict=True)
        ]
        self._recorded: dict[int, list[bytes]] = {}
        self._missing: dict[str, list[bytes]] = {}
        self.said: dict[tuple[Any, ...], _Kind] = {}

    def recorded(self, rank: int) -> list[bytes]:
        """Each window's tail of a value recorded in the state of `rank`, made when first
        asked for (most series see one or two of the three states). Each tail is kept with
        the next window's head after it (the last one without its comma): a series is then
        its first head and, per point, its value and one fragment."""
        tails = self._recorded.get(rank)
        if tails is None:
            state = b',"state":"' + STATES[rank].encode()
            tails = self._recorded[rank] = [
                self.then(i, state + sure) for i, sure in enumerate(self.sure)
            ]
        return tails

    def then(self, i: int, tail: bytes) -> bytes:
        """Window i's tail, then the next window's head; the last window's without its comma."""
        return tail + self.heads[i + 1] if i + 1 < len(self.heads) else tail[:-1]

    def missing(self, reason: str) -> list[bytes]:
        """Each window's tail of a value not recorded for `reason` (or for want of events)."""
        if reason not in self._missing:
            self._missing[reason] = [
                self.then(
                    i,
                    b',"state":null,"reason":'
                    + _DUMPS(reason if ctx.events else metrics.NO_EVENTS)
                    + b',"terms":null,"range":null,"confidence":null'
                    + end,
                )
                for i, (ctx, end) in enumerate(zip(self.facts, self.ends, strict=True))
            ]
        return self._missing[reason]

    def join(self, out: list[bytes], values: list[float | None], tails: list[bytes]) -> None:
        """The points of a series, added to `out`: every window's head, value (9 decimals keep
        every digit the inputs had) and tail (`then`: with the next head). orjson writes the
        values in one call, as it writes them in a whole answer."""
        if not values:
            return
        written = _DUMPS(values)[1:-1].split(b",")
        out.append(self.heads[0])
        out += chain.from_iterable(zip(written, tails, strict=True))


def _additive_points(
    out: list[bytes], metric: Additive, sums: _Sums, rows: list[Row], w: _Windows
) -> None:
    """Points of a sum or a share, computed as `Additive` computes them from cells; column
    by column, in comprehensions: a year by day by site is 29,200 of them."""
    amount = sums.amount[metric.whole]
    rank = sums.rank[metric.whole]  # None: no cell of the class in the window
    found: list[Any] = rows  # a row is None where `ranks` says so
    ranks = [None if row is None else row[rank] for row in found]
    totals = [
        None if k is None else (row[amount] or 0) / MICRO
        for row, k in zip(found, ranks, strict=True)
    ]
    values: list[float | None]
    if metric.part is None:
        # No rounding: the model rounds to 9 decimals, and a whole number of millionths
        # divided by a million is already the float nearest its 9-decimal value (a test
        # checks it to 2**53). 29,200 calls of `round` were 3 ms of a year by day by site.
        values = totals
    else:
        part = sums.amount[metric.part]
        values = [
            None if t is None or t <= 0 else round((row[part] or 0) / MICRO / t, 9)
            for row, t in zip(found, totals, strict=True)
        ]
    nothing = w.missing(metric.reason)
    present = set(ranks)
    by_rank = [w.recorded(r) if r in present else [] for r in range(len(STATES))]
    tails = [
        gone if v is None else by_rank[k or 0][i]
        for i, (v, k, gone) in enumerate(zip(values, ranks, nothing, strict=True))
    ]
    w.join(out, values, tails)


class _RowTotals:
    """`metrics.Totals` of a window's row of sums (`_read_sums`)."""

    __slots__ = ("memo", "row", "sums")

    def __init__(self, row: Row, sums: _Sums) -> None:
        self.row = row
        self.sums = sums
        self.memo: dict[object, Value] = {}

    def amount(self, s: Sum) -> float:
        row = self.row
        return 0.0 if row is None else (row[self.sums.amount[s]] or 0) / MICRO

    def state(self, s: Sum) -> str | None:
        row = self.row
        if row is None:
            return None
        rank = row[self.sums.rank[s]]
        return None if rank is None else STATES[rank]

    def machines(self, s: Sum) -> int:
        row = self.row
        return 0 if row is None else row[self.sums.machines[s]] or 0


def _totals_points(
    out: list[bytes], metric: FromTotals, totals: list[_RowTotals], w: _Windows
) -> None:
    """Points of a metric computed from the sums of its classes of cells, window by window,
    by the formula that computes it from cells."""
    judged, of = queries.judged, metric.of
    _value_points(out, [judged(of(t, ctx), ctx) for t, ctx in zip(totals, w.facts, strict=True)], w)


def _cell_points(
    out: list[bytes], name: str, by_start: dict[Start, list[metrics.Cell]], w: _Windows
) -> None:
    """Points of a metric computed from its cells (`queries.compute`)."""
    compute = queries.compute
    facts: list[WindowFacts] = w.facts
    _value_points(
        out,
        [compute(name, by_start.get(s, []), ctx) for s, ctx in zip(w.starts, facts, strict=True)],
        w,
    )


def _value_points(out: list[bytes], found: list[Value], w: _Windows) -> None:
    """Points of a window's values, each written whole. What follows a value repeats from
    window to window (a state, a reason, the terms, a confidence): it is written once per
    kind, and only a range, a number of its own, each time. A kind's tails without a range
    are kept (`_Windows.said`): the series of a breakdown by site share them."""
    values: list[float | None] = []
    tails: list[bytes] = []
    said = w.said
    for i, v in enumerate(found):
        # floats, as the model makes them: a value may be an int (a sum of nothing is 0)
        values.append(None if v.value is None else float(round(v.value, 9)))
        kind = (v.state, v.reason, v.terms, v.confidence)
        kept = said.get(kind)
        if kept is None:
            kept = said[kind] = _Kind(kind, len(w.ends))
        if v.range is None:
            tail = kept.tails[i]
            if tail is None:
                tail = kept.tails[i] = w.then(i, kept.head + b"null" + kept.end + w.ends[i])
            tails.append(tail)
        else:
            between = _DUMPS([float(round(x, 9)) for x in v.range])
            tails.append(w.then(i, kept.head + between + kept.end + w.ends[i]))
    w.join(out, values, tails)


class _Kind:
    """What a value of one kind (state, reason, terms, confidence) writes around its range,
    and its tail in each window once made (`_value_points`)."""

    __slots__ = ("end", "head", "tails")

    def __init__(self, kind: tuple[Any, ...], windows: int) -> None:
        state, reason, terms, confidence = kind
        self.head = (
            b',"state":'
            + _DUMPS(state)
            + b',"reason":'
            + _DUMPS(reason)
            + b',"terms":'
            + _DUMPS(list(terms) if terms is not None else None)
            + b',"range":'
        )
        self.end = b',"confidence":' + _DUMPS(confidence)
        self.tails: list[bytes | None] = [None] * windows


# Reading sums ---------------------------------------------------------------------------


class _Sums:
    """The classes of cells a request's metrics add up, and where each is in a row of sums:
    its amount, and its weakest state's rank (both null without a cell of it). The part of
    a share (`Additive`) is wanted for its amount alone, and gets no rank: a column of
    sums less for PostgreSQL to filter its rows for."""

    def __init__(self, names: list[str], interval: Interval) -> None:
        ranked: list[Sum] = []
        unranked: list[Sum] = []
        counted: list[Sum] = []
        # The metrics computed from these sums (the others, from cells).
        self.additive = _additive(names)
        self.from_totals = _from_totals(names, interval)
        for m in self.additive.values():
            ranked.append(m.whole)
            unranked += [m.part] if m.part is not None else []
        for t in self.from_totals.values():
            ranked += t.needs
            counted += t.counts
        self.read = bool(self.additive or self.from_totals)  # has any metric its sums read
        self.ranked = list(dict.fromkeys(ranked))
        self.unranked = [s for s in dict.fromkeys(unranked) if s not in self.ranked]
        # Counts of machines: read from the sites' cubes, where a city's own has none.
        self.counted = list(dict.fromkeys(counted))
        self.amount: dict[Sum, int] = {}
        self.rank: dict[Sum, int] = {}
        for i, s in enumerate(self.ranked):
            self.amount[s], self.rank[s] = 2 * i, 2 * i + 1
        for i, s in enumerate(self.unranked, start=2 * len(self.ranked)):
            self.amount[s] = i
        self.machines = {
            s: len(self.amount) + len(self.rank) + i for i, s in enumerate(self.counted)
        }
        width = len(self.amount) + len(self.rank) + len(self.machines)
        self.is_rank = [k in self.rank.values() for k in range(width)]
        self.key = (tuple(names), interval)  # what the columns of sums depend on


class _Resources:
    """The registered resources: by dimension, and their MFA category. The sums test a
    resource's dimension by name, and count only registered resources (as the cells do, by
    joining them), so the rollup rows are read without a join."""

    def __init__(self, session: Session) -> None:
        rows = session.execute(select(Resource.name, Resource.dimension, Resource.mfa_category))
        self.category: dict[str, str] = {}
        self.of: dict[str, list[str]] = {}
        for name, dimension, category in rows:
            self.category[name] = category or "none"
            self.of.setdefault(dimension, []).append(name)
        self.names = sorted(self.category)
        # What the SQL's lists of resources depend on: a resource added changes them.
        self.key = tuple(sorted((n, d) for d, names in self.of.items() for n in names)) + tuple(
            sorted(self.category.items())
        )
        # The lists tested (column, values), in order; those the cube computes.
        self.asked: dict[tuple[str, frozenset[str]], None] = {}
        self.computed: dict[tuple[str, frozenset[str]], ColumnElement[bool]] = {}

    def among(self, column: Any, values: Iterable[str]) -> ColumnElement[bool]:
        """`column IN values`, the values written in the SQL: with dozens of parameters the
        driver parsed the query again on every request, and PostgreSQL hashes a list of
        constants where it searches an array parameter from its start on every row. A test
        the cube computes once per row (`_cube`) is read from its column."""
        key = (column.key, frozenset(values))
        computed = self.computed.get(key)
        if computed is not None:
            return computed
        self.asked[key] = None
        found: ColumnElement[bool] = column.in_(
            bindparam(None, sorted(values), expanding=True, literal_execute=True)
        )
        return found

    def holds(self, s: Sum, cube: Any) -> ColumnElement[bool]:
        """`Sum.holds` in SQL, of rows of registered resources."""
        tests: list[ColumnElement[bool]] = []
        if isinstance(s.action, str):
            tests.append(cube.c.action == s.action)
        elif s.action is not None:
            tests.append(self.among(cube.c.action, s.action))
        # What the class says of the resource, as one test: each is a test on every row of
        # every class (a list of a dimension's resources tested twice cost PostgreSQL more
        # than the sums).
        kept: set[str] | None = None
        if s.dimension is not None:
            kept = set(self.of.get(s.dimension, []))
        if s.mfa is not None:
            accounted = {r for r in self.names if (self.category[r] != "none") == s.mfa}
            kept = accounted if kept is None else kept & accounted
        if s.resource is not None:
            kept = {s.resource} if kept is None else kept & {s.resource}
        if kept is not None:
            only = next(iter(kept)) if len(kept) == 1 else None
            tests.append(cube.c.resource == only if only else self.among(cube.c.resource, kept))
        for column, among in (("ring", s.ring), ("fate", s.fate), ("design", s.design)):
            if among is not None:
                tests.append(self.among(cube.c[column], among))
        if s.recycled is not None:
            tests.append(cube.c.recycled.is_(s.recycled))
        if s.modelled:
            tests.append(cube.c.design_mass_flows > 0)
        return and_(*tests) if tests else true()


def _read_sums(
    session: Session,
    frames: list[Frame],
    interval: Interval,
    group_by: GroupBy | None,
    sums: _Sums,
) -> dict[int, dict[Any, list[Row]]]:
    """Per city, group and window (by its index), the sums' columns; summed in the database
    from the same rollup rows `queries._cells` reads, grouped by ids (the keys are looked up
    after: a join per row cost more than the sums). `group_by` with one frame only."""
    resources = _Resources(session)
    site_id = frames[0].site_id if len(frames) == 1 else None
    # Without a site asked for or a breakdown by site or device, a city's own cube holds the
    # same sums in a twentieth of the rows (20 sites).
    city_level = site_id is None and group_by not in ("site", "device") and not sums.counted
    modelled = any(s.modelled for s in sums.amount)
    spans = _spans(frames, interval, city_level)
    # Everything of the query but the days read and the site is fixed by these: it is built
    # and compiled once (`_Query`), and each request binds its days and site.
    shape = (
        sums.key, resources.key, group_by, city_level, modelled, site_id is not None,
        tuple(f.city.id for f in frames), tuple(t.__tablename__ for t, _, _ in spans),
        session.get_bind().dialect.name,
    )  # fmt: skip
    query = _QUERIES.get(shape)
    if query is None:
        built = _sums_query(
            session,
            frames,
            interval,
            group_by,
            sums,
            resources,
            spans,
            city_level,
            modelled,
            site_id,
        )
        query = _QUERIES.put(shape, built)
    bound: dict[str, Any] = {"q_site": site_id}
    for k, (_, lo, hi) in enumerate(spans):
        bound[f"q_from{k}"], bound[f"q_to{k}"] = lo, hi
    in_key_order = (group_by, interval) in _KEY_ORDERED
    group = group_by is not None
    width = (2 if interval == "hour" else 1) + 1 + group  # the window, the city, the group
    of = {f.city.id: (f, _slots(f, interval), len(f.starts)) for f in frames}
    is_rank = sums.is_rank

    def add(a: Row, b: Row) -> Row:
        """Two rows of one window and key: summed, the weakest of their states."""
        if a is None or b is None:
            return a or b
        return [
            y if x is None else x if y is None else max(x, y) if r else x + y
            for r, x, y in zip(is_rank, a, b, strict=True)
        ]

    by_id: dict[tuple[int, Any], list[Row]] = {}
    hourly = interval == "hour"
    at_city, at_group = 2 if hourly else 1, width - 1 if group else None
    with _stream(session, query, bound, in_key_order) as rows:
        # 7,300 rows for a year by day by site: the loop is kept to lookups and a slice.
        for row in rows:
            city = row[at_city]
            f, slots, count = of[city]
            i = slots.get((row[0], row[1]) if hourly else row[0])
            if i is None:
                i = _slot(row, interval, f)
                if i is None:  # a row outside the frame's windows
                    continue
            gid = (city, None if at_group is None else row[at_group])
            found = by_id.get(gid)
            if found is None:
                found = by_id[gid] = [None] * count
            values = row[width:]  # a tuple: `add` makes new rows, none is changed in place
            found[i] = values if found[i] is None else add(found[i], values)
    keys = _keys(session, frames[0], group_by, resources)
    grouped: dict[int, dict[Any, list[Row]]] = {}
    for (city, gid), found in by_id.items():
        key = None if keys is None else keys.get(gid)
        if keys is not None and key is None:  # a site no longer registered: no cell either
            continue
        groups = grouped.setdefault(city, {})
        other = groups.get(key)
        groups[key] = (
            found if other is None else [add(a, b) for a, b in zip(other, found, strict=True)]
        )
    return grouped


def _sums_query(
    session: Session,
    frames: list[Frame],
    interval: Interval,
    group_by: GroupBy | None,
    sums: _Sums,
    resources: _Resources,
    spans: list[tuple[Any, date, date]],
    city_level: bool,
    modelled: bool,
    site_id: int | None,
) -> _Query:
    """The query of `_read_sums`, its days read (`q_from0`, `q_to0`, ...) and site (`q_site`)
    left to bind."""
    rows = _rows(session, frames, interval, city_level, modelled, spans).subquery()
    streamed = _key_order(rows, interval, group_by) is not None
    cube, rank = _cube(rows, sums, resources, site_id is not None, share=not streamed)
    columns: list[Any] = []
    tests: list[ColumnElement[bool]] = []
    for s in [*sums.ranked, *sums.unranked]:
        held = resources.holds(s, cube)
        tests.append(held)
        measure = cube.c.design_mass if s.modelled else cube.c.amount
        columns.append(cast(func.sum(measure).filter(held), BigInteger))
        if s in sums.rank:
            columns.append(func.max(rank).filter(held))
    for s in sums.counted:
        tests.append(resources.holds(s, cube))
        columns.append(func.count(distinct(_machine(cube))).filter(tests[-1]))
    window = [cube.c.day, cube.c.hour] if interval == "hour" else [cube.c.day]
    group = [] if group_by is None else [_GROUP_COLUMN[group_by](cube)]
    query = select(*window, cube.c.city_id, *group, *columns)
    if group_by is None and tests:
        # Only the rows some sum counts: utilization's machine hours are a few rows of a
        # city's thousands, where every row was read and grouped (a year by day, 14,600 of
        # them, 11 ms in PostgreSQL). A window whose rows count in no sum then has no row
        # rather than one of nulls, which reads the same (`_RowTotals`, `_additive_points`:
        # null or absent alike). Not in a breakdown: there a group with rows is a series,
        # whether or not they count.
        query = query.where(or_(*tests))
    by = _key_order(cube, interval, group_by)
    if by is not None:
        query = query.group_by(*by).order_by(*by)
    else:
        query = query.group_by(*window, cube.c.city_id, *group)
    return _Query.of(session, query)


class _Query:
    """A query of sums, built once per shape. On PostgreSQL it is also compiled once, with
    its lists of values written in: building and compiling it (a few hundred SQLAlchemy
    objects, 30 filtered aggregates for DMC, CMU and FCI) took ~5 ms of every request, where
    PostgreSQL's part of a city's year by day is ~2.5 ms. Its constants are kept with the
    text; a request binds the days and the site."""

    def __init__(self, statement: Any, sql: str | None, constants: dict[str, Any]) -> None:
        self.statement, self.sql, self.constants = statement, sql, constants

    @classmethod
    def of(cls, session: Session, statement: Any) -> _Query:
        dialect = session.get_bind().dialect
        if dialect.name != "postgresql":
            return cls(statement, None, {})
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        return cls(statement, str(compiled), dict(compiled.params))


class _Built:
    """The queries built, by shape; the oldest are let go past `size` (the shapes a city's
    dashboards and planners ask for are a few dozen)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._found: dict[Any, _Query] = {}
        self._lock = threading.Lock()

    def get(self, shape: Any) -> _Query | None:
        return self._found.get(shape)

    def put(self, shape: Any, query: _Query) -> _Query:
        with self._lock:
            while len(self._found) >= self.size:
                del self._found[next(iter(self._found))]
            self._found[shape] = query
        return query


_QUERIES = _Built(512)


# Aggregates from which the tests the classes share are computed once per row (`_cube`).
SHARED_FROM = 12


def _cube(
    rows: Any, sums: _Sums, resources: _Resources, site_asked: bool, share: bool
) -> tuple[Any, ColumnElement[int]]:
    """The rows summed: of registered resources (and of the one site asked for), and the rank
    of each row's state. Each class's sum is filtered by its tests on every row, and many
    classes repeat the same ones (DMC, CMU and FCI test 23 times whether a resource is one of
    mass): with many aggregates each list and the rank are computed once per row, in a
    subquery PostgreSQL may not fold into the sums (`OFFSET 0`). A year by week by site of
    dmc, cmu and fci (30 aggregates over 14,600 rows) took 34 against 52 ms; with the 6 of
    the four default metrics, computing them first cost more than it saved. Not where the
    sums are to be `_stream`ed: PostgreSQL then sorted the subquery's rows before adding up
    the first group, where it streams them from the index."""
    kept = [resources.among(rows.c.resource, resources.names)]
    if site_asked:
        kept.append(rows.c.site_id == bindparam("q_site", None, type_=Integer))
    aggregates = 2 * len(sums.ranked) + len(sums.unranked) + len(sums.counted)
    if not share or aggregates < SHARED_FROM:
        cube = select(rows).where(*kept).subquery()
        return cube, _rank(cube)
    # The lists the classes test, found by testing them on the rows (nothing is read).
    resources.asked.clear()
    for s in [*sums.ranked, *sums.unranked, *sums.counted]:
        resources.holds(s, rows)
    shared = list(resources.asked)
    tests = [
        resources.among(rows.c[column], values).label(f"test_{i}")
        for i, (column, values) in enumerate(shared)
    ]
    cube = select(rows, _rank(rows).label("rank"), *tests).where(*kept).offset(0).subquery()
    resources.computed = {key: cube.c[f"test_{i}"] for i, key in enumerate(shared)}
    return cube, cube.c.rank


def _rank(rows: Any) -> ColumnElement[int]:
    """A row's state by its rank in `STATES`: the weakest of a class is the highest."""
    return case({s: r for r, s in enumerate(STATES)}, value=rows.c.state)


def _key_order(cube: Any, interval: Interval, group_by: GroupBy | None) -> list[Any] | None:
    """For a breakdown by site by day or hour, the columns to group by in the order of the
    site cubes' keys, (city, day, site, ...) and (hour, city, day, site, ...): each group is
    then a run of the key, which PostgreSQL adds up as it reads the index and sends while
    the last groups are read here (`_stream`). None: grouped as before, hashed.

    A breakdown by device by day is read so too, in (city, day, site, device) order: on the
    10M-event history, four alternated rounds of 20, 42-60 against 54-62 ms at best. By the
    hour it did not pay (35-38 against 30-34 ms), nor elsewhere: read this way, a city's own
    cube (a few hundred groups) took 4 ms longer (measured when the query was still compiled
    at every request). `_KEY_ORDERED` names the same three."""
    c = cube.c
    if group_by == "site" and interval == "hour":
        return [c.hour, c.city_id, c.day, c.site_id]
    if group_by == "site" and interval == "day":
        return [c.city_id, c.day, c.site_id]
    if group_by == "device" and interval == "day":
        return [c.city_id, c.day, c.site_id, c.device_id]
    return None


_KEY_ORDERED = {("site", "hour"), ("site", "day"), ("device", "day")}

# Rows a chunk of `_stream`: 200 to 2,000 read a year by day by site alike.
CHUNK = 500
# Chunked rows need libpq 17 (psycopg's binary wheels bring their own); an older system
# libpq reads the whole result first, as before.
CHUNKED = psycopg.pq.version() >= 170000


@contextmanager
def _stream(
    session: Session, query: _Query, bound: dict[str, Any], in_key_order: bool
) -> Iterator[Iterable[Sequence[Any]]]:
    """The rows of `query`, as tuples (Core, not the ORM: thousands of rows).

    On PostgreSQL a query `in_key_order` is read in chunks as the server sends them
    (libpq's chunked rows): the server adds up the next groups on one core while this
    process reads the last ones on the other, where reading the whole result first left
    each waiting for the other: a year by day by site took 14 against 19 ms, its 7,300 rows
    read and placed (psycopg alone). The plan must be one that sends groups as it goes: an
    index scan in key order feeding a streaming aggregate. PostgreSQL's default cost of a
    random page (4, a spinning disk's) made it read the city's range through a bitmap and
    hash every group first; the rollups are a few megabytes a city, read from memory, where
    a random page costs about what a sequential one does (1.1, the value usual on SSDs,
    for this transaction only).

    A stream left unfinished is closed on the way out, whatever ends it: one left open
    made the connection's rollback, as the request ended, wait forever for its rest."""
    connection = session.connection()
    if query.sql is None:
        yield connection.execute(query.statement, bound).all()
        return
    params = {**query.constants, **bound}
    driver: Any = connection.connection.driver_connection
    if not (in_key_order and CHUNKED):
        with driver.cursor() as cursor:
            yield cursor.execute(query.sql, params).fetchall()
        return
    connection.exec_driver_sql("SET LOCAL random_page_cost = 1.1")
    with driver.cursor() as cursor:
        rows = cursor.stream(query.sql, params, size=CHUNK)
        try:
            yield rows
        finally:
            rows.close()


def _slots(f: Frame, interval: Interval) -> dict[Any, int]:
    """Each window's index by the rows' key: a day (or a week's, month's, year's first), or
    an hour's (local day, `calendar.hour_key`)."""
    if interval != "hour":
        return {start: i for i, start in enumerate(f.starts)}
    slots: dict[Any, int] = {}
    for i, start in enumerate(f.starts):
        local = start.astimezone(f.zone)  # type: ignore[attr-defined]
        slots[(local.date(), calendar.hour_key(local))] = i
    return slots


def _slot(row: Any, interval: Interval, f: Frame) -> int | None:
    """The window of a row not keyed as the frame's windows are: an hour keyed in another
    zone than the city's now, placed as `queries._local_hour` places it."""
    if interval != "hour":
        return None
    start = queries._local_hour(row[0], row[1], f.zone)
    return next((i for i, s in enumerate(f.starts) if s == start), None)


def _machine(cube: Any) -> Any:
    """One number per machine: a site's id and its device's (0: the site's own reports). A
    device's id alone would put every site's own reports in one part."""
    return cast(cube.c.site_id, BigInteger) * MACHINE + cube.c.device_id


MACHINE = 2**32  # a site's id is `_machine`'s high half, its device's the low half

_GROUP_COLUMN: dict[str, Callable[[Any], Any]] = {
    "site": lambda cube: cube.c.site_id,
    "device": _machine,
    "resource": lambda cube: cube.c.resource,
    "ring": lambda cube: cube.c.ring,
    "mfa_category": lambda cube: cube.c.resource,
}


class _Same(dict[Any, Any]):
    """Keys that are their own group: a resource or a ring."""

    def get(self, key: Any, default: Any = None) -> Any:
        return key


def _keys(
    session: Session, f: Frame, group_by: GroupBy | None, resources: _Resources
) -> Mapping[Any, str | None] | None:
    """The group of each grouped column's value, as `metrics.group_key` names it."""
    if group_by is None:
        return None
    if group_by == "site":
        found = session.execute(select(Site.id, Site.slug).where(Site.city_id == f.city.id))
        return {id_: slug for id_, slug in found}
    if group_by == "device":
        of_city = session.execute(select(Site.id, Site.slug).where(Site.city_id == f.city.id))
        sites = {id_: slug for id_, slug in of_city}
        registered = session.execute(
            select(Device.site_id, Device.id, Device.slug)
            .join(Site)
            .where(Site.city_id == f.city.id)
        )
        devices = {site * MACHINE + id_: slug for site, id_, slug in registered}
        return _Devices(sites, devices, one_site=f.site_id is not None)
    if group_by == "mfa_category":
        return resources.category
    return _Same()


class _Devices(dict[Any, str | None]):
    """The part of each `_machine`, as `metrics.group_key` names it: a device not registered
    (0: the site's own reports) is its site's reports; a site no longer registered, None."""

    def __init__(self, sites: dict[int, str], devices: dict[int, str], one_site: bool) -> None:
        super().__init__()
        self.sites, self.devices, self.one_site = sites, devices, one_site

    def get(self, key: Any, default: Any = None) -> str | None:
        site = self.sites.get(key // MACHINE)
        if site is None:
            return None
        device = self.devices.get(key) or metrics.SITE_REPORTS
        return device if self.one_site else metrics.device_key(site, device)


def _spans(
    frames: list[Frame], interval: Interval, city_level: bool
) -> list[tuple[Any, date, date]]:
    """(rollup table, from, to) that hold the frames' days: hours, days, or whole months and
    the days around them; of the cities' own cubes when `city_level`."""
    a, b = min(f.read_from for f in frames), max(f.read_to for f in frames)
    if interval == "hour":
        return [(CityFlowRollupHour if city_level else FlowRollupHour, a, b)]
    days, months = (
        (CityFlowRollup, CityFlowRollupMonth) if city_level else (FlowRollup, FlowRollupMonth)
    )
    return [(days, a, b)] if interval in ("day", "week") else queries._sources(a, b, days, months)


def _rows(
    session: Session,
    frames: list[Frame],
    interval: Interval,
    city_level: bool,
    modelled: bool,
    spans: list[tuple[Any, date, date]],
) -> Any:
    """The rollup rows of the frames' cities and the `spans`' tables, their day the window's
    start (hours: day, hour), the days of span i bound as `q_from{i}` and `q_to{i}`; of the
    cities' own cubes when `city_level` (site and device read as 0); with the mass modelled
    from designs when `modelled`."""
    columns = ["action", "resource", "ring", "fate", "recycled", "design", "state", "amount"]
    if modelled:
        columns += ["design_mass", "design_mass_flows"]
    cities = [f.city.id for f in frames]

    def head(t: Any) -> list[Any]:
        return [t.city_id, *queries.site_and_device(t, city_level)]

    def days(t: Any, i: int) -> ColumnElement[bool]:
        within: ColumnElement[bool] = t.day.between(
            bindparam(f"q_from{i}", None, type_=Date), bindparam(f"q_to{i}", None, type_=Date)
        )
        return within

    if interval == "hour":
        ((t, _, _),) = spans
        hours = [] if city_level else [t.hour.in_(queries.HOUR_KEYS)]
        return select(t.day, t.hour, *head(t), *(getattr(t, n) for n in columns)).where(
            *hours, t.city_id.in_(cities), days(t, 0)
        )
    parts = []
    for i, (t, _, _) in enumerate(spans):
        day = t.day if interval == "day" else queries._window(session, t.day, interval)
        parts.append(
            select(day.label("day"), *head(t), *(getattr(t, n) for n in columns)).where(
                t.city_id.in_(cities), days(t, i)
            )
        )
    return union_all(*parts) if len(parts) > 1 else parts[0]
