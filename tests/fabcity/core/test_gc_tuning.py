"""The collector settings of the long-running processes, checked in a fresh interpreter (they
are process-wide and would leak into the test run)."""

from __future__ import annotations

import subprocess
import sys

from fabcity.core.gc_tuning import FIRST_GENERATION_THRESHOLD


def test_start_up_objects_are_frozen_and_first_passes_are_rarer() -> None:
    script = (
        "import gc, sqlalchemy; from fabcity.core import gc_tuning; "
        "before = gc.get_freeze_count(); gc_tuning.tune(); "
        "print(before, gc.get_freeze_count(), *gc.get_threshold())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    before, frozen, first, second, third = map(int, out)
    assert before == 0
    assert frozen > 10_000  # what importing SQLAlchemy left behind is out of every pass
    assert first == FIRST_GENERATION_THRESHOLD
    assert (second, third) == (10, 10)  # the older generations keep CPython's defaults
