"""The dashboard in a real browser: Debian's headless Chromium, driven through chromedriver.

Nothing is downloaded: without /usr/bin/chromium the test is skipped with the install command
(and fails in CI, where `.ci/run` installs it). It seeds a city with known numbers, serves the
app on a free port, and reads what the page shows: the tiles, plotly's own `gd.data`, the
Sankey, the tables. It leaves a screenshot in docs/dashboard.png. A second city's week,
ending today, shows a period not over yet and an FCI with a range.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from fabcity.core import models
from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.ingest.service import ingest
from fabcity.rollups.recompute import recompute_dirty
from services.http.app import create_app
from tests.conftest import settings_for
from tests.support.city import CITY, DEVICE, SITE, event, flow, register
from tests.support.servers import serving
from workers.dispatch import NoDispatch

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"
SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "dashboard.png"
FIRST = date(2026, 3, 1)
DAYS = 14
QUIET = 6  # a day without a single event: a gap in every chart, never a 0


def made_on(i: int) -> int:
    return i % 5 + 1


def seed(factory: Any) -> None:
    """Fourteen days at the lab, each: 3 kg filament from the city, 1 kg of wood from the
    region, 1 kg of metal from beyond; parts made; waste recycled and landfilled; plastic
    recovered. Nothing at all on day 6."""
    events = []
    for i in range(DAYS):
        if i == QUIET:
            continue
        when = f"{FIRST + timedelta(days=i)}T11:00:00+01:00"
        data = [
            flow(quantity=3, ring="city"),
            flow("consume", "wood", 1, "kg", ring="region"),
            flow("consume", "metal", 1, "kg", ring="beyond"),
            flow("produce", "part", made_on(i), "count"),
            flow("discard", "plastic", 0.5, "kg", fate="recycle"),
            flow("discard", "wood", 0.25, "kg", fate="landfill"),
            flow("recover", "recycled_plastic", 0.25, "kg"),
        ]
        if i % 3 == 0:
            data.append(flow("modify", "furniture", 1, "count"))
        events.append(event(data, time=when))
    with transaction(factory) as s:
        assert ingest(s, events).result.accepted == len(events)
    with transaction(factory) as s:
        recompute_dirty(s, 1000)
        s.execute(
            update(models.Device)
            .where(models.Device.slug == DEVICE)
            .values(online=True, last_seen=datetime(2026, 3, 14, 9, tzinfo=UTC))
        )


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = f"headless Chromium is not installed; install it: {INSTALL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fabcity-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never runs, so nothing is downloaded.
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def served(sqlite_url: str) -> Iterator[str]:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    seed(factory)
    app = create_app(settings_for(sqlite_url), "query", factory=factory, dispatcher=NoDispatch())
    try:
        with serving(app) as url:
            yield url
    finally:
        engine.dispose()


def wait_ready(driver: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while driver.execute_script("return document.body.dataset.ready") != "true":
        assert time.monotonic() < deadline, "the dashboard never finished loading"
        time.sleep(0.1)


TILES = (
    "return [...document.querySelectorAll('.tile')].map(t => ({metric: t.dataset.metric,"
    " value: t.dataset.value, state: t.dataset.state, text: t.innerText,"
    " confidence: t.dataset.confidence, range: t.dataset.range, partial: t.dataset.partial,"
    " dashed: getComputedStyle(t).borderTopStyle === 'dashed'}))"
)


def trace(driver: Any, chart: str, metric: str) -> dict[str, Any]:
    traces = driver.execute_script(
        "return document.getElementById(arguments[0]).data.map("
        "t => ({meta: t.meta, x: t.x, y: t.y, customdata: t.customdata, text: t.text,"
        " marker: t.marker}))",
        chart,
    )
    return next(t for t in traces if t["meta"] == metric)


def test_the_dashboard_shows_the_seeded_city(browser: Any, served: str) -> None:
    last = FIRST + timedelta(days=DAYS - 1)
    browser.get(f"{served}/?city={CITY}&from={FIRST}&to={last}&interval=day")
    wait_ready(browser)
    assert browser.execute_script("return document.getElementById('status').textContent") == ""

    tiles = {t["metric"]: t for t in browser.execute_script(TILES)}
    days = [i for i in range(DAYS) if i != QUIET]
    made_total = sum(made_on(i) for i in days)
    assert float(tiles["produced_count"]["value"]) == made_total == 38
    assert tiles["produced_count"]["text"].split("\n")[1:3] == ["38", "reported"]
    # 13 events from 1 of the 2 sites: at least 10 and half the sites, fewer than 30: medium.
    assert tiles["produced_count"]["confidence"] == "medium"
    assert "medium confidence" in tiles["produced_count"]["text"]
    # every DIDO term recorded here: FCI has no range, and the period is long over
    assert tiles["fci"]["range"] == "" and tiles["fci"]["confidence"] == "medium"
    assert {t["partial"] for t in tiles.values()} == {"false"}
    assert float(tiles["repaired_count"]["value"]) == sum(1 for i in days if i % 3 == 0)
    assert float(tiles["local_input_share"]["value"]) == pytest.approx(3 / 5)
    assert "60.0 %" in tiles["local_input_share"]["text"]
    # 0.5 recycled of 0.75 kg thrown away
    assert float(tiles["diversion_rate"]["value"]) == pytest.approx(2 / 3)
    # Testville has no population: DMC per person is not recorded, and says so
    dmc = tiles["dmc_per_person"]
    assert dmc["value"] == "" and "not recorded" in dmc["text"]
    assert "population" in dmc["text"]

    made = trace(browser, "chart-made", "produced_count")
    assert made["x"][0] == str(FIRST) and len(made["y"]) == DAYS
    assert made["y"] == [None if i == QUIET else made_on(i) for i in range(DAYS)]
    assert made["customdata"][0] == "reported"
    assert made["text"][0] == "low confidence"  # one event a day
    assert made["text"][QUIET] == "not recorded"
    assert made["marker"]["pattern"]["shape"] == [""] * DAYS  # every day is over
    share = trace(browser, "chart-shares", "local_input_share")
    assert share["y"][QUIET] is None and share["y"][0] == pytest.approx(0.6)

    sankey = browser.execute_script(
        "const t = document.getElementById('chart-sankey').data[0];"
        "return {labels: t.node.label, source: t.link.source, target: t.link.target,"
        " value: t.link.value}"
    )
    links = {
        (sankey["labels"][s], sankey["labels"][t]): v
        for s, t, v in zip(sankey["source"], sankey["target"], sankey["value"], strict=True)
    }
    assert links["From the city", "MF4 fossil energy materials"] == pytest.approx(3 * 13)
    assert links["From beyond (imported)", "MF2 metal ores"] == pytest.approx(13)
    # 5 kg in a day; 0.75 thrown away and 0.25 recovered: 4 kg a day stay
    assert links["The city's sites", "Stays in the city (stock)"] == pytest.approx(4 * 13)

    accounts = browser.execute_script(
        "return [...document.querySelectorAll('#accounts tr[data-category]')].map("
        "r => [r.dataset.category, r.cells[2].dataset.value])"
    )
    assert ["MF2", "13.0"] in accounts or ["MF2", "13"] in accounts  # IMP of metal
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#devices tr[data-site]')].map("
        "r => [r.dataset.site, r.dataset.device || null, r.dataset.online || null, r.innerText])"
    )
    assert [r[:3] for r in rows] == [["hub", None, None], [SITE, DEVICE, "true"]]
    assert "online" in rows[1][3]

    for _ in range(2):  # the page grows as plotly redraws at the new size
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(int(height) + 120, 4000))
        time.sleep(0.5)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000


def test_the_dashboard_fits_a_phone(browser: Any, served: str) -> None:
    browser.set_window_size(390, 844)
    browser.get(f"{served}/?city={CITY}&from={FIRST}&to={FIRST + timedelta(days=DAYS - 1)}")
    wait_ready(browser)
    widths = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth,"
        " document.querySelector('.tile').getBoundingClientRect().width]"
    )
    # nothing wider than the screen; tiles two to a row at most
    assert widths[0] <= widths[1]
    assert widths[2] <= widths[1] / 2 + 20 or widths[2] <= widths[1]


@pytest.fixture
def served_today(sqlite_url: str) -> Iterator[tuple[str, date]]:
    """The test city's week up to today: an event three days ago, and one a minute ago, each
    1 kg of wood from the city consumed and 1 kg discarded to be recycled (METRICS.md's
    check). Nothing is made, so open_design_share is not recorded: DIDO and FCI get a range."""
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    now = datetime.now(UTC)
    today = now.astimezone(ZoneInfo("Europe/Madrid")).date()
    data = [flow("consume", "wood", 1, "kg", ring="city"),
            flow("discard", "wood", 1, "kg", fate="recycle")]  # fmt: skip
    events = [
        event(data, time=(now - timedelta(days=3)).isoformat()),
        event(data, time=(now - timedelta(minutes=1)).isoformat()),
    ]
    with transaction(factory) as s:
        assert ingest(s, events).result.accepted == 2
    with transaction(factory) as s:
        recompute_dirty(s, 1000)
    app = create_app(settings_for(sqlite_url), "query", factory=factory, dispatcher=NoDispatch())
    try:
        with serving(app) as url:
            yield url, today
    finally:
        engine.dispose()


def test_a_period_not_over_and_a_range_are_drawn_apart(
    browser: Any, served_today: tuple[str, date]
) -> None:
    url, today = served_today
    first = today - timedelta(days=6)
    browser.get(f"{url}/?city={CITY}&from={first}&to={today}&interval=day")
    wait_ready(browser)
    assert browser.execute_script("return document.getElementById('status').textContent") == ""
    tiles = {t["metric"]: t for t in browser.execute_script(TILES)}
    # The week: 2 events from 1 of 2 sites. DIDO: local 1, diverted 1, coverage 1/2, open
    # designs not recorded: 2.5 / 3, range [2.5 / 4, 3.5 / 4]; PITO 0, so FCI the same.
    fci = tiles["fci"]
    assert float(fci["value"]) == pytest.approx(2.5 / 3)
    assert [float(v) for v in fci["range"].split(",")] == [0.625, 0.875]
    assert "0.625 – 0.875" in fci["text"] and "range" in fci["text"]
    assert fci["confidence"] == "low" and "low confidence" in fci["text"]
    assert {t["partial"] for t in tiles.values()} == {"true"}
    assert all(t["dashed"] for t in tiles.values())
    coverage = browser.execute_script("return document.getElementById('coverage').textContent")
    assert "not over yet" in coverage

    share = trace(browser, "chart-shares", "fci")
    assert share["x"][-1] == str(today) and len(share["y"]) == 7
    # FCI with a range is modelled (a hollow diamond); today is not over yet: a hollow
    # diamond with a dot, and larger.
    assert share["marker"]["symbol"][-1] == "diamond-open-dot"
    assert share["marker"]["symbol"][3] == "diamond-open"
    assert share["marker"]["size"][-1] > share["marker"]["size"][3]
    local = trace(browser, "chart-shares", "local_input_share")
    assert (local["marker"]["symbol"][3], local["marker"]["symbol"][-1]) == (
        "square",
        "square-open-dot",
    )  # reported
    assert share["text"][-1] == "low confidence, period not over"
    # Both days with events have a range, drawn as a bar from its low to its high end.
    span = trace(browser, "chart-shares", "fci:range")
    assert span["x"] == [str(first + timedelta(days=3))] * 2 + [None] + [str(today)] * 2 + [None]
    assert span["y"] == [0.625, 0.875, None, 0.625, 0.875, None]
    inputs = trace(browser, "chart-mass", "input_kg")
    assert inputs["marker"]["pattern"]["shape"][-1] == "/"
    assert inputs["marker"]["pattern"]["shape"][3] == ""
    assert inputs["marker"]["opacity"][-1] < inputs["marker"]["opacity"][3] == 1
    notes = browser.execute_script(
        "return document.getElementById('chart-mass').layout.annotations.map(a => a.text)"
    )
    assert any("not over yet" in n for n in notes)
