"""The web console in headless Chromium (Debian's chromium + chromedriver via selenium):
log in with an API key, watch a STAT batch overtake ROUTINE ones, open a batch page,
review and edit the fields that will leave, then send. Screenshots are saved."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pydicom
import pytest

from pipeline.testing import find_markers, make_study

pytestmark = [pytest.mark.real, pytest.mark.slow]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are needed: run .ci/setup")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where screenshots go: SCREENSHOT_DIR when set, else the test's folder."""
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def site(site_env, redis_url, start_worker, gateway_factory):
    env = {**site_env, "TELERAD_BROKER_URL": redis_url}
    start_worker(env, concurrency=1)
    return gateway_factory(env)


def wait_for(what, timeout: float = 60, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not get there in time")
        time.sleep(poll)


def row_states(driver) -> dict[str, tuple[str, str]]:
    """batch ID -> (priority group, state), read from the live table as the page shows it.

    Read in one script: the table's rows are replaced every second.
    """
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#batches tbody tr[data-batch]')].map("
        "tr => [tr.dataset.batch, tr.parentElement.dataset.priority, tr.dataset.state]);")
    return {b: (p, st) for b, p, st in rows}


def click_live(driver, css: str) -> None:
    """Click an element of the live table, again if the table was redrawn under the click."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"could not click {css}")


def login(driver, gw, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(gw.url + "/console")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Telerad console"  # 401: the login page
    assert accessibility_problems(driver) == []
    field = driver.find_element(By.ID, "key")
    assert driver.find_element(By.CSS_SELECTOR, "label[for=key]").text == "API key"
    field.send_keys("trk_00000000_wrong")
    field.submit()
    # The form posts and the page is replaced: wait for the answer, not for a fixed time.
    [error] = wait_for(lambda: driver.find_elements(By.ID, "login-error"))
    assert "not valid" in error.text
    field = wait_for(lambda: driver.find_elements(By.ID, "key"))[0]
    field.send_keys(key)
    field.submit()
    wait_for(lambda: driver.current_url.endswith("/console") and driver.find_elements(By.ID, "batches"))


A11Y_PROBLEMS = """
const out = [];
for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
  const labelled = (el.id && document.querySelector('label[for="' + el.id + '"]')) || el.getAttribute('aria-label');
  if (!labelled) out.push('control without a label: ' + (el.id || el.name || el.tagName));
}
for (const t of document.querySelectorAll('table')) {
  if (!t.querySelector('caption')) out.push('table without a caption');
  if (!t.querySelector('th[scope]')) out.push('table without header cells');
}
if (document.querySelectorAll('h1').length !== 1) out.push('not exactly one h1');
let last = 0;
for (const h of document.querySelectorAll('h1, h2, h3, h4')) {
  const level = Number(h.tagName[1]);
  if (level > last + 1) out.push('heading level skipped at ' + h.textContent);
  last = level;
}
if (!document.documentElement.lang) out.push('no lang on html');
return out;
"""


def accessibility_problems(driver) -> list[str]:
    """Labels on every control, captions and header cells on tables, heading order, a page language."""
    return driver.execute_script(A11Y_PROBLEMS)


def zip_of(files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i, f in enumerate(files):
            z.write(f, f"{i:04d}.dcm")
    return buf.getvalue()


def test_console_shows_stat_overtaking_routine_and_a_batch_page(site, browser, tmp_path, shots):
    """Log in; ROUTINE batches queued first; the STAT one submitted last is done while ROUTINE ones still wait."""
    from selenium.webdriver.common.by import By

    login(browser, site, site.key("submit,read"))
    routine = make_study(tmp_path / "routine", series=2, images=20, rows=64, cols=64)
    body = zip_of(routine.files)
    routine_ids = []
    for _ in range(6):  # enough that a worker faster than the uploads still leaves several waiting
        r = site.post("/api/batches?priority=ROUTINE", data=body, headers={"Content-Type": "application/zip"})
        assert r.status_code == 202
        routine_ids.append(r.json()["batch_id"])
    stat = make_study(tmp_path / "stat", series=1, images=2)
    r = site.post("/api/batches?priority=STAT", data=zip_of(stat.files), headers={"Content-Type": "application/zip"})
    stat_id = r.json()["batch_id"]

    # The table updates itself (no reload): wait until it shows the STAT batch done.
    seen = wait_for(lambda: (s := row_states(browser)).get(stat_id, ("", ""))[1] == "done" and s, timeout=120)
    assert seen[stat_id][0] == "STAT"
    waiting = [b for b in routine_ids if seen[b][1] != "done"]
    assert len(waiting) >= 2, f"STAT did not overtake: {seen}"
    assert all(seen[b][0] == "ROUTINE" for b in routine_ids)
    groups = [b.get_attribute("data-priority") for b in browser.find_elements(By.CSS_SELECTOR, "#batches tbody")]
    assert groups == ["STAT", "URGENT", "ROUTINE"]
    assert "updated" in browser.find_element(By.ID, "updated").text
    assert accessibility_problems(browser) == []
    browser.save_screenshot(str(shots / "console-batches.png"))
    # Keyboard: the first Tab reaches the skip link, which moves focus to the main content.
    from selenium.webdriver.common.keys import Keys

    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    assert browser.switch_to.active_element.get_attribute("id") == "main"

    # The batch page: counts, the per-stage timeline, the manifest link.
    click_live(browser, f"tr[data-batch='{stat_id}'] a")
    wait_for(lambda: stat_id in browser.find_element(By.TAG_NAME, "h1").text)
    assert browser.find_element(By.ID, "state").text == "done"
    stages = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#timeline tbody th[scope=row]")]
    assert stages == ["De-identify", "Write manifest", "Upload", "Store mapping", "Finalize"]
    counts = {tr.find_element(By.TAG_NAME, "th").text: tr.find_element(By.TAG_NAME, "td").text
              for tr in browser.find_elements(By.CSS_SELECTOR, "#counts tbody tr")}
    assert counts["images"] == "2" and counts["studies"] == "1"
    assert accessibility_problems(browser) == []
    browser.save_screenshot(str(shots / "console-batch.png"))
    browser.find_element(By.ID, "manifest-link").click()
    wait_for(lambda: stat_id in browser.page_source and '"files"' in browser.page_source)

    wait_for(lambda: all(site.get(f"/api/batches/{b}").json()["state"] == "done" for b in routine_ids), timeout=180)


def test_review_edit_and_send_from_the_browser(site, browser, tmp_path, shots):
    """The review shows originals beside what will leave; an edit repeating the name is refused; edits go out."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    login(browser, site, site.key("submit,read"))
    study = make_study(tmp_path / "study", series=1, images=3)
    phi = study.phi[0]
    browser.get(site.url + "/console/upload")
    browser.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in study.files))
    Select(browser.find_element(By.ID, "priority")).select_by_value("URGENT")
    browser.find_element(By.ID, "review-button").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#review-table tbody tr"))

    def table() -> dict[str, tuple[str, str]]:
        out = {}
        for tr in browser.find_elements(By.CSS_SELECTOR, "#review-table tbody tr"):
            cells = tr.find_elements(By.TAG_NAME, "td")
            inputs = cells[1].find_elements(By.TAG_NAME, "input")
            out[tr.find_element(By.TAG_NAME, "th").text] = (
                cells[0].text, inputs[0].get_attribute("value") if inputs else cells[1].text)
        return out

    fields = table()
    assert fields["Patient name"][0] == str(phi.patient_name)
    assert fields["Patient ID"] == (phi.patient_id, fields["Patient ID"][1])
    assert fields["Patient ID"][1].startswith("ACME-P")
    assert fields["Institution"][1] == "(removed)"
    assert browser.find_element(By.CSS_SELECTOR, "label[for=edit-PatientName]").text == "Patient name that will leave"

    # An edit that repeats the patient's own name is refused by the check, named by field only.
    name = browser.find_element(By.ID, "edit-PatientName")
    name.clear()
    name.send_keys(f"X {phi.patient_name.split('^')[0]}")
    browser.find_element(By.ID, "check-button").click()
    problem = wait_for(lambda: browser.find_element(By.ID, "problem").text)
    assert "repeats the file's original Patient name" in problem and phi.patient_name.split("^")[0] not in problem

    name = browser.find_element(By.ID, "edit-PatientName")
    name.clear()
    name.send_keys("CASE^REVIEW")
    desc = browser.find_element(By.ID, "edit-StudyDescription")
    desc.clear()
    desc.send_keys("CT review")
    browser.find_element(By.ID, "check-button").click()
    wait_for(lambda: "Reviewed" in browser.find_element(By.ID, "message").text
             and table()["Patient name"][1] == "CASE^REVIEW")
    assert table()["Study description"][1] == "CT review"
    assert accessibility_problems(browser) == []
    assert browser.switch_to.active_element.get_attribute("id") == "review-heading"  # focus follows the review
    browser.save_screenshot(str(shots / "console-review.png"))

    browser.find_element(By.ID, "send-button").click()
    link = wait_for(lambda: browser.find_elements(By.ID, "sent-batch"))[0]
    batch_id = link.text
    done = site.wait_state(batch_id)
    assert done["state"] == "done" and done["priority"] == "URGENT" and done["counts"]["images"] == 3
    bucket = Path(site.env["TELERAD_HOME"]) / "bucket" / batch_id
    images = sorted(bucket.rglob("*.dcm"))
    assert len(images) == 3
    for path in images:
        ds = pydicom.dcmread(path)
        assert str(ds.PatientName) == "CASE^REVIEW" and ds.StudyDescription == "CT review"
        assert find_markers(path.read_bytes(), study.markers()) == []
    assert find_markers(site.log().encode(), study.markers()) == []
