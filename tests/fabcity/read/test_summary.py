"""A period's figures and breakdowns read from the city's own cubes are those read from its
sites' cubes, on both databases: the summary always reads the city's, a breakdown unless it
tells sites or devices apart (`queries.reads_sites`). The Sankey reads the sites' cubes."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import transaction
from fabcity.read import metrics, queries, sankey, summary
from tests.support.city import CITY
from tests.support.history import FIRST, LAST, NOW

CITY_LEVEL = [n for n in metrics.METRICS if not queries.reads_sites([n], None)]


def periods(s: Session) -> tuple[queries.Period, queries.Period]:
    return (
        queries.read_period(s, CITY, FIRST, LAST, NOW),
        queries.read_period(s, CITY, FIRST, LAST, NOW, city_level=True),
    )


def test_the_summary_of_the_city_cubes(history: sessionmaker[Session]) -> None:
    with transaction(history) as s:
        sites, city = periods(s)
        # The city's cubes hold far fewer cells: one per kind of flow, not per site as well.
        assert len(city.cells) < len(sites.cells)
        made = summary.summarise(sites)
        assert summary.summarise(city) == made
        assert any(f.value for f in made.figures)  # the history has something to compare


def test_the_sankey_is_the_same_whatever_order_its_cells_come_in(
    history: sessionmaker[Session],
) -> None:
    with transaction(history) as s:
        sites, _ = periods(s)
    drawn = sankey.build(sites.cells)
    assert len(drawn.links) > 3
    assert sankey.build(list(reversed(sites.cells))) == drawn


@pytest.mark.parametrize("group_by", [None, "resource", "ring", "mfa_category"])
def test_a_breakdown_not_by_site_of_the_city_cubes(
    history: sessionmaker[Session], group_by: metrics.GroupBy | None
) -> None:
    with transaction(history) as s:
        sites, city = periods(s)
        assert summary.breakdown(city, CITY_LEVEL, group_by) == summary.breakdown(
            sites, CITY_LEVEL, group_by
        )


def test_what_tells_sites_apart() -> None:
    assert queries.reads_sites(["input_kg"], "site")
    assert queries.reads_sites(["input_kg"], "device")
    assert queries.reads_sites(["utilization"], None)  # counts machines
    assert not queries.reads_sites(["input_kg", "fci", "dmc"], "resource")
    assert "utilization" not in CITY_LEVEL and "fci" in CITY_LEVEL
