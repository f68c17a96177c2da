"""`/v1/definitions` and the `/explain` page are read without a key: they hold no city's data,
and a planner follows a link to them from any tile."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fabcity.read.metrics import METRICS
from services.http.app import create_app
from tests.services.http.test_dashboard import browser  # noqa: F401  (the fixture)
from tests.support.servers import serving
from workers.dispatch import NoDispatch

DOCS = Path(__file__).resolve().parents[3] / "docs"

MakeClient = Callable[..., TestClient]


def test_definitions_and_the_page_need_no_key(make_client: MakeClient) -> None:
    client = make_client(auth="required")
    body = client.get("/v1/definitions")
    assert body.status_code == 200, body.text
    assert [m["name"] for m in body.json()["metrics"]] == list(METRICS)
    assert "confidence" in body.json()["concepts"]
    page = client.get("/explain")
    assert page.status_code == 200 and "explain.js" in page.text
    assert client.get("/dashboard/explain.js").status_code == 200


def test_the_explanation_page_in_the_browser(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    """Every metric has its anchor, a link to `/explain#fci` lands on the index, and the page
    fits a phone. Screenshots at both sizes go to docs/."""
    from tests.conftest import settings_for

    url = f"sqlite:///{tmp_path / 'explain.db'}"
    app = create_app(settings_for(url, auth="required"), "query", dispatcher=NoDispatch())
    with serving(app) as base:
        browser.set_window_size(1280, 900)
        browser.get(f"{base}/explain#fci")
        deadline = time.monotonic() + 20
        while browser.execute_script("return document.body.dataset.ready") != "true":
            assert time.monotonic() < deadline, "the page never loaded"
            time.sleep(0.1)
        anchors = browser.execute_script(
            "return [...document.querySelectorAll('article.definition')].map(a => a.id)"
        )
        assert anchors == list(METRICS)
        title = browser.execute_script("return document.querySelector('#fci h3').textContent")
        assert title == "Fab City Index (FCI) (fci, ratio)"
        # Scrolled to the index it was linked to (the last article: as far as the page goes).
        assert browser.execute_script("return window.scrollY") > 0
        top = browser.execute_script(
            "return document.getElementById('fci').getBoundingClientRect().top"
        )
        assert 0 <= top < browser.execute_script("return window.innerHeight")
        assert browser.save_screenshot(str(DOCS / "explain.png"))
        browser.set_window_size(390, 844)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 390
        assert browser.save_screenshot(str(DOCS / "explain-phone.png"))
