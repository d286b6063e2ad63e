"""The Rollout page and a Wave view in headless Chromium: log in through Airflow's login page as
compliance, read figures that reconcile with `mes-rollout status`, see the plotly charts drawn.
Screenshots are kept under var/test-artifacts/ui/. Skipped, with the reason, where Chromium or its
driver is not installed (CI installs them)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import ARTIFACTS, ApiServer, Rollout
from tests.ui.populate import WAVE_ID

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT_SECONDS = 60


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        problem = f"no Chromium and chromedriver at {CHROMIUM} / {CHROMEDRIVER} (CI installs them)"
        if os.environ.get("MES_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MES_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mes-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1800"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_SECONDS).until(condition)


def _log_in(driver: Any, server: ApiServer, username: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{server.base_url}/auth/login/")
    user_field = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "input[name='username']"))
    user_field.send_keys(username)
    driver.find_element(By.CSS_SELECTOR, "input[name='password']").send_keys(server.passwords[username])
    driver.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    _wait(driver, lambda d: d.get_cookie("_token") is not None)


def _values(driver: Any, attribute: str) -> dict[str, int]:
    from selenium.webdriver.common.by import By

    return {
        element.get_attribute(attribute): int(element.get_attribute("data-value"))
        for element in driver.find_elements(By.CSS_SELECTOR, f"[{attribute}][data-value]")
    }


def _charts_drawn(driver: Any, expected: int) -> None:
    from selenium.webdriver.common.by import By

    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".chart .main-svg")) >= expected)


def test_compliance_reads_the_rollout_in_chromium(browser: Any, api_server: ApiServer, rollout: Rollout) -> None:
    from selenium.webdriver.common.by import By

    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    # Without logging in, the page is refused (no figures reach the browser).
    browser.get(f"{api_server.base_url}/mes-rollout/index.html")
    assert "Not authenticated" in browser.page_source and "data-total" not in browser.page_source

    _log_in(browser, api_server, "compliance")
    browser.get(f"{api_server.base_url}/mes-rollout/index.html")
    _charts_drawn(browser, 4)
    browser.save_screenshot(str(folder / "rollout.png"))
    totals = _values(browser, "data-total")
    status = rollout.status
    assert totals["persons/total"] == status["persons"]["total"]
    assert {label.split("/", 1)[1]: value for label, value in totals.items() if label.startswith("enrolments/")} == \
        status["enrolments"]  # fmt: skip
    for channel, statuses in status["notifications"].items():
        assert {k.split("/", 1)[1]: v for k, v in totals.items() if k.startswith(f"notifications.{channel}/")} == statuses
    funnel = _values(browser, "data-funnel")
    assert funnel["activated"] + funnel["automatic"] == status["enrolments"].get("created", 0)
    assert funnel["dmp_migrated"] == status["dmp_documents"]["migrated"]
    assert funnel["letters_posted"] == status["notifications"].get("letter", {}).get("posted", 0) + \
        status["notifications"].get("letter", {}).get("returned", 0)  # fmt: skip

    browser.find_element(By.CSS_SELECTOR, f"a[href='waves/{WAVE_ID}.html']").click()
    _wait(browser, lambda d: d.current_url.endswith(f"/mes-rollout/waves/{WAVE_ID}.html"))
    _charts_drawn(browser, 1)
    rows = browser.find_elements(By.CSS_SELECTOR, "#departements tr[data-departement]")
    assert sum(int(row.find_elements(By.CSS_SELECTOR, "td[data-value]")[0].get_attribute("data-value")) for row in rows) \
        == funnel["selected"]  # fmt: skip
    email_frame = browser.find_element(By.ID, "sample-email")
    browser.switch_to.frame(email_frame)
    assert "Camille" in browser.find_element(By.TAG_NAME, "body").text
    browser.switch_to.default_content()
    browser.save_screenshot(str(folder / "wave.png"))
    assert (folder / "rollout.png").stat().st_size > 10_000 and (folder / "wave.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_data_docs_page_shows_its_results_with_the_network_off(browser: Any, rollout: Rollout) -> None:
    """Compliance opens the migration's Data Docs from the archive with no network at all: the index
    and a validation page render their results table from files on disk alone."""
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    indexes = sorted(rollout.var_dir.rglob("data_docs/committed/index.html"))
    assert indexes, "the populated rollout has no Data Docs"
    browser.get(indexes[0].as_uri())
    links = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "table a[href]"))
    assert links, "the Data Docs index lists no validation"
    assert browser.find_elements(By.TAG_NAME, "table")
    links[0].click()
    tables = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "table"))
    text = " ".join(table.text for table in tables)
    assert "Evaluated Expectations" in text and "Successful Expectations" in text, text[:500]
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / "data-docs-offline.png"))
