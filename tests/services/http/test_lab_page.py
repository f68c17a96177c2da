"""The lab's page in a real browser (Debian's headless Chromium, as the dashboard's test): a lab
manager with a site key logs a delivery and a job, corrects a slip, withdraws a job and uploads
a spreadsheet; the city's figures follow. Every expected figure is summed by hand from what the
test types. Screenshots at desktop and phone sizes go to docs/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from fabcity.core.db import make_engine, make_sessionmaker, transaction
from fabcity.registry import keys
from services.http.app import create_app
from tests.conftest import settings_for
from tests.services.http.test_dashboard import browser  # noqa: F401  (the fixture)
from tests.support.city import CITY, DEVICE, OTHER_SITE, SITE, register
from tests.support.servers import serving
from workers import jobs
from workers.dispatch import NoDispatch

DOCS = Path(__file__).resolve().parents[3] / "docs"


class Lab:
    def __init__(self, url: str, factory: sessionmaker[Session], key: str, admin: str) -> None:
        self.url, self.factory, self.key = url, factory, key
        self.admin = {"Authorization": f"Bearer {admin}"}

    def figure(self, name: str) -> float | None:
        """Today's `name` in the city, after the worker has caught up."""
        jobs.recompute_dirty_windows(self.factory, 1000)
        today = datetime.now(ZoneInfo("Europe/Madrid")).date().isoformat()
        response = httpx.get(
            f"{self.url}/v1/cities/{CITY}/metrics",
            params={"from": today, "to": today, "interval": "day", "names": name},
            headers=self.admin,
        )
        assert response.status_code == 200, response.text
        value: float | None = response.json()["series"][0]["points"][0]["value"]
        return value


@pytest.fixture
def lab(sqlite_url: str) -> Iterator[Lab]:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    register(factory)
    with transaction(factory) as s:
        site_key = keys.create(s, "site", CITY, SITE).secret
        admin = keys.create(s, "admin").secret
    settings = settings_for(sqlite_url, auth="required")
    app = create_app(settings, "both", factory=factory, dispatcher=NoDispatch())
    try:
        with serving(app) as url:
            yield Lab(url, factory, site_key, admin)
    finally:
        engine.dispose()


def wait(driver: Any, script: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := driver.execute_script(script)):
        assert time.monotonic() < deadline, f"never true: {script}"
        time.sleep(0.1)
    return value


def status(driver: Any) -> str:
    text: str = wait(driver, "return document.getElementById('status').textContent")
    driver.execute_script("document.getElementById('status').textContent = ''")
    return text


def fill(driver: Any, form: str, values: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    root = driver.find_element(By.ID, form)
    for name, value in values.items():
        field = root.find_element(By.CSS_SELECTOR, f"[name={name}]")
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        elif field.get_attribute("type") == "checkbox":
            if (value == "on") != field.is_selected():
                field.click()
        else:
            field.clear()
            field.send_keys(value)
    root.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def test_a_lab_logs_corrects_and_uploads_and_the_figures_follow(
    browser: Any,  # noqa: F811
    lab: Lab,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{lab.url}/lab")
    # Keys are required: the page asks for the lab's key, then learns its site from it.
    wait(browser, "return !document.getElementById('key-form').hidden")
    browser.find_element(By.ID, "key").send_keys(lab.key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait(browser, "return document.body.dataset.ready === 'true'")
    assert browser.find_element(By.ID, "where").text == f"{CITY} / {SITE}"
    machines = browser.execute_script(
        "return [...document.querySelectorAll('#job [name=device] option')].map(o => o.value)"
    )
    assert DEVICE in machines

    # 2.40 kg of plywood from the region, typed as 240: the slip of the issue.
    browser.find_element(By.CSS_SELECTOR, "[data-tab=received]").click()
    fill(
        browser, "received", {"resource": "wood", "quantity": "240", "unit": "kg", "ring": "region"}
    )
    assert status(browser).startswith("Logged")
    # A job on the printer: 300 g of recycled filament from the city, 3 parts, 1.5 machine
    # hours, 20 g of offcuts recycled.
    browser.find_element(By.CSS_SELECTOR, "[data-tab=job]").click()
    fill(
        browser,
        "job",
        {
            "device": DEVICE,
            "count": "3",
            "hours": "1.5",
            "m_resource": "filament",
            "m_qty": "300",
            "m_unit": "g",
            "m_ring": "city",
            "m_recycled": "on",
            "waste_qty": "20",
            "waste_unit": "g",
            "waste_fate": "recycle",
        },
    )
    assert status(browser).startswith("Logged")
    # inputs: 240 kg + 0.3 kg
    assert lab.figure("input_kg") == pytest.approx(240.3)
    assert lab.figure("produced_count") == pytest.approx(3)
    assert lab.figure("machine_hours") == pytest.approx(1.5)

    # The slip corrected on the page: 240 → 2.4 kg. Newest first: the delivery is second.
    delivery = browser.find_elements(By.CSS_SELECTOR, "#sent li")[1]
    assert "240 kg wood" in delivery.text
    quantity = delivery.find_element(By.CSS_SELECTOR, "input[type=number]")
    quantity.clear()
    quantity.send_keys("2.4")
    delivery.find_element(By.XPATH, ".//button[text()='Correct the quantities']").click()
    assert status(browser).startswith("Corrected")
    assert lab.figure("input_kg") == pytest.approx(2.7)  # 2.4 + 0.3

    # The job withdrawn: its filament, parts and hours count no more.
    job = next(
        li for li in browser.find_elements(By.CSS_SELECTOR, "#sent li") if "filament" in li.text
    )
    job.find_element(By.XPATH, ".//button[text()='Withdraw']").click()
    assert status(browser).startswith("Withdrawn")
    assert lab.figure("input_kg") == pytest.approx(2.4)
    assert lab.figure("produced_count") in (0, None)

    # A spreadsheet with a good row, a row of another site (not this key's) and a bad number.
    today = datetime.now(ZoneInfo("Europe/Madrid")).date().isoformat()
    sheet = tmp_path / "records.csv"
    sheet.write_text(
        "time,site,action,resource,quantity,unit,ring\n"
        f"{today},{SITE},consume,metal,1.5,kg,beyond\n"
        f"{today},{OTHER_SITE},consume,metal,1,kg,beyond\n"
        f"{today},{SITE},consume,metal,a lot,kg,beyond\n"
    )
    browser.find_element(By.CSS_SELECTOR, "[data-tab=sheet]").click()
    browser.find_element(By.CSS_SELECTOR, "#sheet input[type=file]").send_keys(str(sheet))
    browser.find_element(By.CSS_SELECTOR, "#sheet button[type=submit]").click()
    assert status(browser).startswith("1 rows stored, 0 stored before, 2 refused")
    report = browser.execute_script(
        "return [...document.querySelectorAll('#sheet-report tbody tr')]"
        ".map(tr => [...tr.cells].map(td => td.textContent))"
    )
    assert [r[:2] for r in report] == [["2", "accepted"], ["3", "refused"], ["4", "refused"]]
    assert OTHER_SITE in report[1][2] and "quantity" in report[2][2]
    assert lab.figure("input_kg") == pytest.approx(3.9)  # 2.4 + 1.5

    # Screenshots: the job form on a laptop and on a phone.
    browser.find_element(By.CSS_SELECTOR, "[data-tab=job]").click()
    browser.set_window_size(1280, 1100)
    assert browser.save_screenshot(str(DOCS / "lab.png"))
    browser.set_window_size(390, 844)
    # On a phone, nothing is wider than the screen.
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390
    assert browser.save_screenshot(str(DOCS / "lab-phone.png"))


def test_a_planner_key_is_told_it_cannot_log(browser: Any, lab: Lab) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    with transaction(lab.factory) as s:
        planner = keys.create(s, "planner", CITY).secret
    browser.get(f"{lab.url}/lab")
    wait(browser, "return !document.getElementById('key-form').hidden")
    browser.find_element(By.ID, "key").send_keys(planner)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    message = wait(
        browser,
        "const m = document.getElementById('key-message').textContent;"
        "return m.includes('site key') && !document.getElementById('key-form').hidden && m",
    )
    assert "planner key" in message
