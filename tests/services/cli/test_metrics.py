"""`fabcity metrics rebuild`: an operator's mistake is a refusal, not a traceback."""

from __future__ import annotations

from tests.services.cli.runner import assert_refused, fabcity


def test_rebuilding_an_unknown_city_names_it(sqlite_url: str) -> None:
    done = fabcity(sqlite_url, "metrics", "rebuild", "--city", "nowhere")
    assert_refused(done, 1, "nowhere")
