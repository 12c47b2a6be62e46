"""The viewer in a real browser: headless Debian chromium (chromium-driver, Selenium) against `videojobs serve`.

A clip built from the sample (bottles, plus a banner whose words change every three
seconds, so OCR reads text) is analysed for real; the page must draw one box per
detection of the frame it shows, list the tracks on a timeline, narrow the OCR list
as one searches, and never ask anything of a host other than the service. A
screenshot is kept under the test's tmp dir (its path is printed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import SAMPLE
from tests.media import labelled_clip

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LABELS = ["LEMONADE 330ML", "SPARKLING WATER", "ORANGE JUICE"]


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromium-driver are missing: `make install` installs them (APT_PACKAGES)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                 "--disable-sync", "--no-first-run", "--no-default-browser-check", "--metrics-recording-only",
                 "--disable-extensions", "--window-size=1400,1800", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def requested_urls(driver) -> list[tuple[str, str]]:
    """(document, URL) of every request the browser sent (Chrome DevTools performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append((message["params"].get("documentURL", ""), message["params"]["request"]["url"]))
    return urls


def test_viewer_in_a_browser(service_factory, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    svc = service_factory().start()
    clip = labelled_clip(SAMPLE, tmp_path / "labelled.mp4", LABELS)
    job_id = svc.submit_rest(clip, sample_fps=1)
    assert svc.wait_for(job_id)["status"] == "COMPLETED"
    doc = svc.http.get(f"/video/results/{job_id}").json()
    frames = doc["results"]
    ocr = [line["text"] for f in frames for line in f["result"]["ocr"]]
    assert doc["tracks"] and len(ocr) >= 3 and any("ORANGE" in t for t in ocr), ocr  # the clip does its job

    base = f"http://127.0.0.1:{svc.http_port}"
    browser.get(f"{base}/video/view/{job_id}")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")

    def boxes() -> int:
        return len(browser.find_elements(By.CSS_SELECTOR, "#overlay g.det"))

    # One drawn box per detection of the frame shown, frame after frame.
    assert boxes() == len(frames[0]["result"]["detections"]) > 0
    labels = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#overlay g.det text")]
    first = frames[0]["result"]["detections"][0]
    assert any(label.startswith(f"{first['class_name']} {first['confidence']:.2f}") for label in labels), labels
    for position in (1, 2):
        browser.find_element(By.ID, "next").click()
        assert boxes() == len(frames[position]["result"]["detections"])
        assert f"frame {frames[position]['frame_index']} " in browser.find_element(By.ID, "frame-label").text
    wait.until(lambda d: d.execute_script("const i = document.getElementById('frame-image');"
                                          "return i.complete && i.naturalWidth > 0;"))
    assert browser.execute_script("return document.getElementById('frame-image').naturalWidth") == doc["video"]["width"]

    # The minimum-confidence filter hides the weaker boxes.
    browser.execute_script("const r = document.getElementById('min-confidence'); r.value = '0.6';"
                           "r.dispatchEvent(new Event('input'));")
    wait.until(lambda d: boxes() == sum(det["confidence"] >= 0.6 for det in frames[2]["result"]["detections"]))
    browser.execute_script("const r = document.getElementById('min-confidence'); r.value = '0';"
                           "r.dispatchEvent(new Event('input'));")
    wait.until(lambda d: boxes() == len(frames[2]["result"]["detections"]))
    # The filter redraws on the next animation frame, the timeline with it: past two frames, nothing is pending
    # (where every box passes 0.6, the waits above are met before that redraw, which would replace the rows).
    browser.execute_async_script("requestAnimationFrame(() => requestAnimationFrame(arguments[0]));")

    # The track timeline: one row per track, each a bar that jumps to the track's first frame.
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline .track-row")
    assert len(rows) == len(doc["tracks"])
    last_track = doc["tracks"][-1]
    rows[-1].find_element(By.CSS_SELECTOR, ".track-bar").click()
    shown = browser.find_element(By.ID, "frame-label").text
    assert f"frame {last_track['first_frame_index']} " in shown, shown

    # OCR text: every line listed, and a search narrows the list to the lines that match.
    listed = browser.find_elements(By.CSS_SELECTOR, "#ocr-list li")
    assert len(listed) == len(ocr)
    search = browser.find_element(By.ID, "ocr-search")
    search.send_keys("orange")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ocr-list li"))
               == sum("orange" in t.lower() for t in ocr))
    matches = browser.find_elements(By.CSS_SELECTOR, "#ocr-list li")
    assert 0 < len(matches) < len(ocr)
    assert all(m.find_element(By.TAG_NAME, "mark").text.lower() == "orange" for m in matches)
    matches[0].click()  # jumps to the frame that text was read in
    assert f"frame {matches[0].get_attribute('data-frame')} " in browser.find_element(By.ID, "frame-label").text

    # Thumbnails of the analysed frames with their boxes.
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#thumbs figure")
    assert len(thumbs) == len(frames)
    assert len(thumbs[0].find_elements(By.CSS_SELECTOR, "svg g.det")) == len(frames[0]["result"]["detections"])

    browser.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "viewer.png"
    assert browser.save_screenshot(str(shot))
    print(f"\nviewer screenshot: {shot}")
    artefacts = Path(__file__).resolve().parents[2] / "var" / "test-artefacts"
    artefacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, artefacts / "viewer.png")

    # Nothing outside the service, and nothing the page's CSP had to block.
    requests = requested_urls(browser)
    page = [url for document, url in requests if document.startswith(base)]
    assert any("/frames/" in u for u in page) and any("/results/" in u for u in page)
    assert [u for u in page if not u.startswith(f"{base}/") and not u.startswith("data:")] == []
    # ...nor did the browser itself reach any other host while the test ran.
    assert [u for _, u in requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")
            and urlsplit(u).netloc != urlsplit(base).netloc] == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    assert svc.stop() == 0
