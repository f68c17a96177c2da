"""The planner's dashboard in a real browser (Debian's headless Chromium, as test_dashboard):
targets drawn with their gap, cities compared, the drill-down from city to site to device,
the map of the sites, CSV downloads with a key, a planner key for one city, and a Sankey
that fits at desktop and phone widths for several cities and periods.

The numbers are derived by hand from the seed below. It leaves screenshots in docs/."""

from __future__ import annotations

import csv
import io
import math
import tempfile
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core import models
from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.ingest.service import ingest
from fabcity.registry import entries, keys, targets
from fabcity.rollups.recompute import recompute_dirty
from schemas import api
from services.http.app import create_app
from tests.conftest import settings_for
from tests.services.http.test_dashboard import (  # noqa: F401 (a fixture)
    DAYS,
    FIRST,
    browser,
    seed,
    wait_ready,
)
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, event, flow, register
from tests.support.servers import serving
from workers.dispatch import NoDispatch

DOCS = Path(__file__).resolve().parents[3] / "docs"
LAST = FIRST + timedelta(days=DAYS - 1)  # 2026-03-14
OTHER = "otherville"
LOOP = "loopville"
# Barcelona's latitude: a degree of longitude is cos(41.39°) = 0.75 of a degree of latitude.
LAB_AT, HUB_AT = (41.390, 2.170), (41.400, 2.190)
FATES = ("reuse", "recycle", "compost", "energy", "incineration", "landfill", None)


def add_city(factory: sessionmaker[Session], slug: str, site: str, name: str) -> None:
    with transaction(factory) as s:
        city = entries.create_city(
            s, api.CityIn(slug=slug, name=name, country="NL", timezone="Europe/Amsterdam")
        )
        entries.create_site(s, city, api.SiteIn(slug=site, name=site.title()))


def seed_planner(factory: sessionmaker[Session]) -> None:
    """Testville as test_dashboard seeds it (13 days of 3 kg filament from the city, 1 kg of
    wood from the region, 1 kg of metal from beyond, at the lab), plus its printer's 2 kg of
    filament from the city on the last day; coordinates for both sites; two targets.

    Otherville: 10 kg from the city and 10 kg from beyond on 5 March.

    Loopville: 90 days from 1 January of wood, metal and plastic, things made and exported,
    waste to every fate, and on 15 February a 290 kg loop: recovered and used again."""
    seed(factory)
    add_city(factory, OTHER, "works", "Otherville")
    add_city(factory, LOOP, "yard", "Loopville")
    printer = event([flow(quantity=2, ring="city")], source=f"/{CITY}/{SITE}/{DEVICE}",
                    time=f"{LAST}T16:00:00+01:00")  # fmt: skip
    other = event([flow(quantity=10, ring="city"), flow(quantity=10, ring="beyond")],
                  source=f"/{OTHER}/works", time="2026-03-05T10:00:00+01:00")  # fmt: skip
    loop = []
    for i in range(90):
        day = date(2026, 1, 1) + timedelta(days=i)
        data = [
            flow("consume", "wood", 2, "kg", ring="region"),
            flow("consume", "metal", 1, "kg", ring="beyond"),
            flow("consume", "plastic", 1, "kg", ring="city"),
            flow("produce", "plastic", 1, "kg", ring="city"),
            flow("produce", "plastic", 0.5, "kg", ring="beyond"),
            flow("discard", "wood", 0.3, "kg", **({"fate": f} if (f := FATES[i % 7]) else {})),
        ]
        if i == 45:
            data += [flow("recover", "recycled_plastic", 290, "kg"),
                     flow(quantity=290, ring="city", recycled=True)]  # fmt: skip
        loop.append(event(data, source=f"/{LOOP}/yard", time=f"{day}T10:00:00+01:00"))
    with transaction(factory) as s:
        result = ingest(s, [printer, other, *loop]).result
        assert result.accepted == 92, result
    with transaction(factory) as s:
        recompute_dirty(s, 5000)
        for slug, (lat, lon) in ((SITE, LAB_AT), (OTHER_SITE, HUB_AT)):
            s.execute(
                update(models.Site)
                .where(models.Site.slug == slug)
                .values(latitude=lat, longitude=lon)
            )
        city = entries.get_city(s, CITY)
        for metric, direction, value in (
            ("local_input_share", "at_least", 0.8),
            ("regional_input_share", "at_least", 0.9),  # on no chart of its own
        ):
            goal = api.TargetIn(direction=direction, value=value, due=date(2030, 12, 31))
            targets.set_target(s, city, metric, "ratio", goal, None)


@pytest.fixture
def planner_db(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    seed_planner(factory)
    yield factory
    engine.dispose()


@pytest.fixture
def served(sqlite_url: str, planner_db: sessionmaker[Session]) -> Iterator[str]:
    app = create_app(settings_for(sqlite_url), "query", factory=planner_db, dispatcher=NoDispatch())
    with serving(app) as url:
        yield url


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def rows(driver: Any, table: str, key: str) -> dict[str, list[str | None]]:
    """A table's rows by their data key: each cell's data-value, or None where not recorded."""
    found: dict[str, list[str | None]] = js(
        driver,
        "return Object.fromEntries([...document.querySelectorAll(`#${arguments[0]} tr`)]"
        ".filter(r => r.dataset[arguments[1]] !== undefined)"
        ".map(r => [r.dataset[arguments[1]], [...r.cells].slice(1)"
        ".map(c => c.dataset.value ?? null)]))",
        table,
        key,
    )
    return found


def settle(driver: Any) -> None:
    """Wait for the page's latest render or drill-down to finish."""
    time.sleep(0.3)
    wait_ready(driver)
    deadline = time.monotonic() + 10
    while js(driver, "return document.getElementById('status').textContent") == "Loading…":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def shoot(driver: Any, section: str, name: str) -> None:
    """A screenshot of one section of the page, e.g. docs/compare.png."""
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, section).find_element(By.XPATH, "..")
    # below the header, which stays at the top on a laptop
    js(
        driver,
        "arguments[0].scrollIntoView();"
        " window.scrollBy(0, -document.querySelector('header').offsetHeight - 8)",
        element,
    )
    time.sleep(0.3)
    path = DOCS / name
    assert element.screenshot(str(path))
    assert path.stat().st_size > 10_000


def test_targets_compare_drill_down_and_map_show_the_seeded_numbers(
    browser: Any,  # noqa: F811
    served: str,
) -> None:
    browser.set_window_size(1280, 2400)
    browser.get(f"{served}/?city={CITY}&from={FIRST}&to={LAST}&interval=day")
    wait_ready(browser)
    assert js(browser, "return document.getElementById('status').textContent") == ""

    # Targets. The last day: 3 + 2 kg from the city, 1 from the region, 1 from beyond = 7 kg.
    # Local 5/7 against 0.8: short by 0.0857 (8.6 points); regional 6/7 against 0.9: 0.0429.
    gaps = js(browser, "return Object.fromEntries([...document.querySelectorAll("
              "'#targets tr[data-metric]')].map(r => [r.dataset.metric,"
              " [Number(r.dataset.gap), r.innerText]]))")  # fmt: skip
    assert gaps["local_input_share"][0] == pytest.approx(0.8 - 5 / 7)
    assert "short by 8.6 points" in gaps["local_input_share"][1]
    assert gaps["regional_input_share"][0] == pytest.approx(0.9 - 6 / 7)
    assert "short by 4.3 points" in gaps["regional_input_share"][1]
    # drawn as lines: on the shares chart, and on a chart of its own for the regional share
    lines = js(
        browser,
        "return ['chart-shares', 'chart-target-regional_input_share'].map("
        "id => document.getElementById(id).layout.shapes.map(s => [s.name, s.y0]))",
    )
    assert lines == [[["target:local_input_share", 0.8]], [["target:regional_input_share", 0.9]]]
    notes = js(browser, "return document.getElementById('chart-shares').layout.annotations"
               ".map(a => a.text).join(' | ')")  # fmt: skip
    assert "target ≥ 80.0 % by 2030-12-31, short by 8.6 points" in notes

    # Every tile and column header links to its explanation; the labs' figures say so.
    links = js(
        browser,
        "return [...document.querySelectorAll('.tile a.explain,"
        " #accounts th a.explain')].map(a => [a.getAttribute('href'), a.textContent])",
    )
    assert ["/explain#dmc_per_person", "Labs' material consumption per person"] in links
    assert ["/explain#de", "DE"] in links and ["/explain#u", "U"] in links
    assert len(links) == 7 + 5  # seven tiles, five accounts columns

    # Compare. Testville over the fortnight: 41 kg from the city of 67 (3 × 13 + 2; 13 of
    # wood, 13 of metal). Otherville: 10 of 20.
    compared = rows(browser, "compare", "city")
    columns = js(browser, "return [...document.querySelectorAll('#compare th')]"
                 ".slice(1).map(t => t.dataset.metric)")  # fmt: skip
    local, used = columns.index("local_input_share"), columns.index("input_kg")
    assert float(compared[CITY][local] or 0) == pytest.approx(41 / 67)
    assert float(compared[CITY][used] or 0) == 67
    assert float(compared[OTHER][local] or 0) == 0.5 and float(compared[OTHER][used] or 0) == 20
    assert set(compared) == {CITY, OTHER, LOOP}
    series = js(browser, "return document.getElementById('chart-compare').data.map("
                "t => [t.meta, t.x, t.y])")  # fmt: skip
    by_city = {meta: dict(zip(x, y, strict=True)) for meta, x, y in series}
    assert by_city[OTHER]["2026-03-05"] == 0.5 and by_city[OTHER]["2026-03-06"] is None
    assert by_city[CITY][str(LAST)] == pytest.approx(5 / 7)

    # Drill down: the city by site: the lab used 5 kg a day for 13 days, 7 the last: 67.
    sites = rows(browser, "breakdown-table", "key")
    assert list(sites) == [SITE]  # the hub reported nothing: no row, not a row of zeros
    assert float(sites[SITE][-1] or 0) == 67 and sites[SITE][6] is None  # the quiet day
    js(browser, "const s = document.getElementById('drill-site');"
       " s.value = arguments[0]; s.dispatchEvent(new Event('change'))", SITE)  # fmt: skip
    settle(browser)
    devices = rows(browser, "breakdown-table", "key")
    assert {k: float(v[-1] or 0) for k, v in devices.items()} == {"(site reports)": 65, DEVICE: 2}
    js(browser, "const s = document.getElementById('drill-device');"
       " s.value = arguments[0]; s.dispatchEvent(new Event('change'))", DEVICE)  # fmt: skip
    settle(browser)
    alone = rows(browser, "breakdown-table", "key")
    assert list(alone) == [DEVICE] and float(alone[DEVICE][-1] or 0) == 2
    crumbs = js(browser, "return document.getElementById('crumbs').innerText")
    assert crumbs == "Testville › Lab › Printer"
    assert f"site={SITE}&device={DEVICE}" in browser.current_url
    shoot(browser, "h-drill", "drilldown.png")

    # Back at the city by device: a device is `site/device` there (two sites may each have
    # a "printer"), and its row leads to it.
    js(browser, "const s = document.getElementById('drill-site');"
       " s.value = ''; s.dispatchEvent(new Event('change'))")  # fmt: skip
    settle(browser)
    js(browser, "const s = document.getElementById('breakdown');"
       " s.value = 'device'; s.dispatchEvent(new Event('change'))")  # fmt: skip
    settle(browser)
    machines = rows(browser, "breakdown-table", "key")
    assert {k: float(v[-1] or 0) for k, v in machines.items()} == {
        f"{SITE}/(site reports)": 65,
        f"{SITE}/{DEVICE}": 2,
    }
    js(browser, "document.querySelector(`#breakdown-table tr[data-key='${arguments[0]}'] a`)"
       ".click()", f"{SITE}/{DEVICE}")  # fmt: skip
    settle(browser)
    assert js(browser, "return document.getElementById('crumbs').innerText") == crumbs

    # The map: longitude across, latitude up, a degree east drawn cos(41.395°) as long.
    sites_map = js(
        browser,
        "const t = document.getElementById('chart-map').data[0];"
        "return {x: t.x, y: t.y, custom: t.customdata, size: t.marker.size,"
        " ratio: document.getElementById('chart-map').layout.xaxis.scaleratio}",
    )
    placed = {
        c[0]: (x, y, c[1], size)
        for x, y, c, size in zip(
            sites_map["x"], sites_map["y"], sites_map["custom"], sites_map["size"], strict=True
        )
    }
    assert placed[SITE][:3] == (LAB_AT[1], LAB_AT[0], 67)
    assert placed[OTHER_SITE][:3] == (HUB_AT[1], HUB_AT[0], None)
    assert placed[SITE][3] == 40 and placed[OTHER_SITE][3] == 8  # 8 + 32 × √(67 / 67)
    assert sites_map["ratio"] == pytest.approx(math.cos(math.radians(41.395)))
    no_network = js(
        browser,
        "return performance.getEntriesByType('resource')"
        ".map(e => e.name).filter(n => !n.startsWith(location.origin))",
    )
    assert no_network == []  # no tiles, no topojson, nothing from outside

    shoot(browser, "h-compare", "compare.png")
    shoot(browser, "h-map", "map.png")
    browser.set_window_size(390, 3000)
    time.sleep(1)
    for section, name in (("h-compare", "compare-phone.png"), ("h-drill", "drilldown-phone.png"),
                          ("h-map", "map-phone.png")):  # fmt: skip
        shoot(browser, section, name)
    assert js(browser, "return document.documentElement.scrollWidth <= window.innerWidth")
    # the top of the page as a phone shows it: header, tiles, targets
    browser.set_window_size(390, 1800)
    js(browser, "window.scrollTo(0, 0)")
    time.sleep(0.5)
    assert browser.save_screenshot(str(DOCS / "dashboard-phone.png"))


SANKEY_BOXES = """
const chart = document.getElementById('chart-sankey');
const frame = chart.querySelector('svg.main-svg').getBoundingClientRect();
const box = (el) => { const r = el.getBoundingClientRect();
  return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
return {
  frame: box(chart.querySelector('svg.main-svg')),
  nodes: [...chart.querySelectorAll('.sankey-node .node-rect')].map(box),
  links: [...chart.querySelectorAll('.sankey-link')].map(box),
  labels: [...chart.querySelectorAll('.sankey-node .node-label')]
    .filter(t => t.textContent).map(t => ({...box(t), text: t.textContent})),
};
"""


def overlap(a: dict[str, float], b: dict[str, float]) -> float:
    w = min(a["right"], b["right"]) - max(a["left"], b["left"])
    h = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
    return max(w, 0) * max(h, 0)


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_the_sankey_fits_at_desktop_and_phone_sizes(
    browser: Any,  # noqa: F811
    served: str,
    width: int,
    height: int,
) -> None:
    browser.set_window_size(width, height)
    cases = [
        (CITY, FIRST, LAST),  # a fortnight
        (CITY, LAST, LAST),  # one day
        (LOOP, date(2026, 1, 1), date(2026, 3, 31)),  # 90 days, every fate, a 290 kg loop
        (LOOP, date(2026, 2, 15), date(2026, 2, 15)),  # the loop's day alone
        (OTHER, date(2026, 3, 5), date(2026, 3, 5)),
    ]
    for city, first, last in cases:
        browser.get(f"{served}/?city={city}&from={first}&to={last}&interval=week")
        wait_ready(browser)
        found = js(browser, SANKEY_BOXES)
        frame, nodes, labels = found["frame"], found["nodes"], found["labels"]
        assert nodes, (city, first)
        # a link too: a loop drawn as an arc around the diagram would leave it
        for node in nodes + found["links"]:  # a pixel of anti-aliasing either side
            assert frame["left"] - 1 <= node["left"] and node["right"] <= frame["right"] + 1
            assert frame["top"] - 1 <= node["top"] and node["bottom"] <= frame["bottom"] + 1
        for label in labels:
            assert frame["left"] - 1 <= label["left"], (city, label)
            assert label["right"] <= frame["right"] + 1, (city, label)
            assert frame["top"] - 1 <= label["top"] and label["bottom"] <= frame["bottom"] + 1
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                assert overlap(a, b) < 4, (city, first, width, a["text"], b["text"])
    if width == 390:
        shoot(browser, "h-flows", "flows-phone.png")


@pytest.fixture
def served_with_keys(
    sqlite_url: str, planner_db: sessionmaker[Session]
) -> Iterator[tuple[str, str, str]]:
    with transaction(planner_db) as s:
        planner = keys.create(s, "planner", OTHER).secret
        lab = keys.create(s, "site", CITY, SITE).secret
    settings = settings_for(sqlite_url, auth="required")
    app = create_app(settings, "query", factory=planner_db, dispatcher=NoDispatch())
    with serving(app) as url:
        yield url, planner, lab


def test_a_planner_key_for_one_city_reads_it_and_downloads_its_csv(
    browser: Any,  # noqa: F811
    served_with_keys: tuple[str, str, str],
) -> None:
    url, planner, lab = served_with_keys
    downloads = Path(tempfile.mkdtemp(prefix="fabcity-downloads-"))
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    browser.get(f"{url}/explain")  # the origin, to store the key in
    js(browser, "localStorage.setItem('fabcity-api-key', arguments[0])", planner)
    # asked for Testville, which this key may not read: the page shows the key's one city
    browser.get(f"{url}/?city={CITY}&from=2026-03-05&to=2026-03-05")
    wait_ready(browser)
    state = js(
        browser,
        "return [document.getElementById('status').textContent,"
        " document.getElementById('key-form').hidden, document.getElementById('city')"
        ".value, [...document.getElementById('city').options].map(o => o.value)]",
    )
    assert state == ["", True, OTHER, [OTHER]]
    # The footer's CSV and a chart's CSV: fetched with the key (a plain link would get 401).
    js(browser, "document.getElementById('csv-link').click()")
    js(browser, "document.querySelector('button.csv[data-for=\"chart-compare\"]').click()")
    # a table made in the page, and a chart as an image
    js(browser, "document.querySelector('button.csv[data-for=\"devices\"]').click()")
    js(browser, "document.querySelector('button.png[data-for=\"chart-made\"]').click()")
    wanted = {f"{OTHER}-summary.csv", "compare.csv", f"{OTHER}-devices.csv", f"{OTHER}-made.png"}
    deadline = time.monotonic() + 15
    while not wanted <= {p.name for p in downloads.iterdir()}:
        assert time.monotonic() < deadline, list(downloads.iterdir())
        time.sleep(0.2)
    assert (downloads / f"{OTHER}-made.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    devices = list(csv.DictReader(io.StringIO((downloads / f"{OTHER}-devices.csv").read_text())))
    assert [(r["site"], r["device"]) for r in devices] == [("works", "")]  # no device there
    summary = (downloads / f"{OTHER}-summary.csv").read_text()
    figures = {r["name"]: r for r in csv.DictReader(io.StringIO(summary))}
    assert float(figures["input_kg"]["value"]) == 20
    compared = list(csv.DictReader(io.StringIO((downloads / "compare.csv").read_text())))
    assert [(r["city"], float(r["value"])) for r in compared] == [(OTHER, 0.5)]

    # The planner sets a target from the page: at most 15 kg a day; 5 March used 20 (10 + 10).
    js(browser, "document.getElementById('target-editor').open = true;"
       "document.getElementById('target-metric').value = 'input_kg';"
       "document.getElementById('target-direction').value = 'at_most';"
       "document.getElementById('target-value').value = '15';"
       "document.getElementById('target-due').value = '2030-12-31';"
       "document.getElementById('target-form').requestSubmit()")  # fmt: skip
    deadline = time.monotonic() + 10
    while not js(browser, "return document.querySelector('#targets tr[data-metric=input_kg]')"):
        assert time.monotonic() < deadline, js(
            browser, "return document.getElementById('target-message').textContent"
        )
        time.sleep(0.2)
    settle(browser)
    row = js(browser, "const r = document.querySelector('#targets tr[data-metric=input_kg]');"
             "return [Number(r.dataset.gap), r.innerText]")  # fmt: skip
    assert row[0] == 5 and "short by 5 kg" in row[1] and "≤ 15 kg by 2030-12-31" in row[1]
    line = js(browser, "return document.getElementById('chart-mass').layout.shapes"
              ".map(s => [s.name, s.y0])")  # fmt: skip
    assert line == [["target:input_kg", 15]]

    # A lab's key reads no city's figures: said once, with what the key is for; no loop of
    # prompts for another key.
    js(browser, "localStorage.setItem('fabcity-api-key', arguments[0])", lab)
    browser.get(f"{url}/?city={CITY}")
    wait_ready(browser)
    message, asking = js(browser, "return [document.getElementById('status').textContent,"
                         " !document.getElementById('key-form').hidden]")  # fmt: skip
    assert "site key" in message and "/lab" in message
    assert asking is False


def test_auto_refresh_redraws_while_the_page_is_open(
    browser: Any,  # noqa: F811
    served: str,
) -> None:
    browser.get(f"{served}/?city={OTHER}&from=2026-03-05&to=2026-03-05&refresh=2")
    wait_ready(browser)
    first = int(js(browser, "return document.body.dataset.renders"))
    time.sleep(4.5)
    assert int(js(browser, "return document.body.dataset.renders")) >= first + 1
    assert js(browser, "return document.getElementById('refresh').value") == "2"
    # Hidden (another tab in front): nothing is asked; shown again: it catches up at once.
    js(browser, "Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
       "document.dispatchEvent(new Event('visibilitychange'))")  # fmt: skip
    wait_ready(browser)
    hidden = int(js(browser, "return document.body.dataset.renders"))
    time.sleep(4.5)
    assert int(js(browser, "return document.body.dataset.renders")) == hidden
    js(browser, "Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
       "document.dispatchEvent(new Event('visibilitychange'))")  # fmt: skip
    time.sleep(1)
    wait_ready(browser)
    assert int(js(browser, "return document.body.dataset.renders")) >= hidden + 1
