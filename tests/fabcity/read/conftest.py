"""The history the read tests compare on, on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support import history as made


@pytest.fixture
def history(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Six weeks of a city of two sites and a device, posted at random hours (some on the day
    the clocks go forward), some estimated, then rolled up."""
    yield from made.history(db_url)
