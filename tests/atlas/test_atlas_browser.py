"""The atlas in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium):
every page loads without a console error and with non-zero inline SVGs, a block box leads to its
block diagram, the search finds "resnet" and "残差", the language switch works; screenshots.

Skips with a reason when Chromium, its driver or Selenium is absent. Screenshots go to
``$NNATLAS_SCREENS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900")

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(not Path(CHROMEDRIVER).is_file(),
                       reason="chromedriver is not installed (apt-get install chromium-driver)"),
]


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="Selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()


def _open(driver, path: Path) -> list[dict]:
    """Load a page; return the console's errors (and clear the log)."""
    driver.get(path.resolve().as_uri())
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_every_page_loads_without_console_errors_and_svgs_have_size(site, driver) -> None:
    pages = sorted(site.out.rglob("*.html"))
    start = time.perf_counter()
    svgs = 0
    for page in pages:
        errors = _open(driver, page)
        assert not errors, f"{page.relative_to(site.out)}: {errors}"
        sizes = driver.execute_script(
            "return Array.from(document.querySelectorAll('svg')).map(function (s) {"
            " var r = s.getBoundingClientRect(); return [r.width, r.height]; });")
        assert all(w > 0 and h > 0 for w, h in sizes), f"{page.relative_to(site.out)}: an SVG of size zero {sizes}"
        svgs += len(sizes)
    assert svgs > len(pages) // 3 or not shutil.which("dot")
    print(f"\n{len(pages)} pages, {svgs} SVGs in {time.perf_counter() - start:.1f} s")


@pytest.mark.skipif(not shutil.which("dot"), reason="Graphviz's dot is not installed: no SVG to click")
def test_clicking_a_block_box_reaches_its_block_diagram(site, driver) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, site.out / "models" / "resnet18.html")
    links = driver.find_elements(By.CSS_SELECTOR, "#main-diagram svg a")
    assert links, "the main diagram has no block links"
    target = links[0].get_attribute("href") or links[0].get_attribute("xlink:href")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", links[0])
    links[0].click()
    assert driver.current_url.split("#")[1].startswith("block-"), driver.current_url
    block_id = driver.current_url.split("#")[1]
    assert target.endswith("#" + block_id)
    block = driver.find_element(By.ID, block_id)
    assert block.find_element(By.CSS_SELECTOR, "svg").size["height"] > 0
    in_view = driver.execute_script("var r = arguments[0].getBoundingClientRect(); "
                                    "return r.top < window.innerHeight && r.bottom > 0;", block)
    assert in_view, "the block diagram was not scrolled into view"


def _visible_rows(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [r.get_attribute("data-search").split()[0]
            for r in driver.find_elements(By.CSS_SELECTOR, "#compare tbody tr") if r.is_displayed()]


def test_search_finds_resnet_and_the_chinese_label(site, driver) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, site.out / "index.html")
    box = driver.find_element(By.ID, "search")
    total = len(_visible_rows(driver))
    box.send_keys("resnet")
    rows = _visible_rows(driver)
    assert "resnet18" in rows and "lenet" not in rows and len(rows) < total
    box.clear()
    driver.execute_script("arguments[0].value = '残差'; arguments[0].dispatchEvent(new Event('input'));", box)
    assert set(_visible_rows(driver)) >= {"resnet18", "resnet34", "resnet50"}
    assert "lenet" not in _visible_rows(driver)
    driver.execute_script("arguments[0].value = 'zzzz'; arguments[0].dispatchEvent(new Event('input'));", box)
    assert _visible_rows(driver) == [] and driver.find_element(By.ID, "no-match").is_displayed()


def test_sorting_the_comparison_table(site, driver) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, site.out / "index.html")
    heads = driver.find_elements(By.CSS_SELECTOR, "#compare th")
    heads[3].click()  # parameters, ascending
    values = [float(c.get_attribute("data-v")) for c in driver.find_elements(By.CSS_SELECTOR, "#compare tbody td:nth-child(4)")]
    assert values == sorted(values)
    heads[3].click()
    values = [float(c.get_attribute("data-v")) for c in driver.find_elements(By.CSS_SELECTOR, "#compare tbody td:nth-child(4)")]
    assert values == sorted(values, reverse=True)


def test_language_switch(site, driver) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, site.out / "models" / "lstm.html")
    driver.find_element(By.ID, "lang-switch").click()
    assert driver.current_url.endswith("/zh/models/lstm.html")
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
    assert "验证" in driver.find_element(By.ID, "verification").text
    driver.find_element(By.ID, "lang-switch").click()
    assert driver.current_url.endswith("/models/lstm.html") and "/zh/" not in driver.current_url
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"


def _screens(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("NNATLAS_SCREENS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_screenshots(site, driver, tmp_path: Path) -> None:
    folder = _screens(tmp_path)
    shots = {"index": "index.html", "resnet18": "models/resnet18.html", "lstm": "models/lstm.html",
             "transformer": "models/transformer_tiny.html", "resnet18_zh": "zh/models/resnet18.html"}
    try:
        for name, rel in shots.items():
            _open(driver, site.out / rel)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1280, min(max(int(height), 900), 8000))
            path = folder / f"atlas_{name}.png"
            assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    finally:
        driver.set_window_size(1280, 900)
