"""The web calculator in a real headless Chromium (Selenium), against a live uvicorn server.

Chromium and its driver are Debian's (/usr/bin/chromium, /usr/bin/chromedriver); Selenium
Manager is never asked to download anything. Without them these tests fail: CI installs them.
Screenshots of each page land in the test's tmp_path and in /tmp/convscope-screens/.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from convscope.cli import execute

from .web_server import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENS = Path("/tmp/convscope-screens")
SEED = "/?layer=conv&input=64x64x10&layout=hwc&out_channels=10&kernel=6&stride=2&padding=1"
WAIT_S = 15

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with live_server() as url:
        yield url


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"the browser tests need Debian's chromium and chromedriver; missing: "
            f"{', '.join(missing)} (apt-get install chromium chromium-driver)"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield chrome
    finally:
        chrome.quit()


def screenshot(driver: webdriver.Chrome, name: str, tmp_path: Path) -> Path:
    """The page as a PNG in ``tmp_path``, copied to /tmp/convscope-screens/ for people."""
    path = tmp_path / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(height, 900), 4000))  # the whole page, within reason
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1100)
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS / path.name)
    return path


def wait_for(driver: webdriver.Chrome, condition, message: str):
    # the page's script may replace an element between finding it and reading it
    return WebDriverWait(
        driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition, message)


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    """The element's text, found again if the page's script replaced it meanwhile."""
    for _ in range(20):
        try:
            return driver.find_element(By.ID, element_id).text
        except StaleElementReferenceException:
            time.sleep(0.05)
    return driver.find_element(By.ID, element_id).text


def set_field(driver: webdriver.Chrome, name: str, value: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f'[name="{name}"]')
    field.clear()
    field.send_keys(value)


def cli_error(argv: list[str]) -> str:
    code, message = execute(argv, io.StringIO().write)
    assert code == 2 and message
    return message


def severe_entries(driver: webdriver.Chrome) -> list[str]:
    """The console's errors since the last call (reading the log empties it)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_seed_link_opens_answered(driver, server, tmp_path):
    driver.get(server + SEED)
    assert text_of(driver, "output-shape") == "10×31×31"
    assert text_of(driver, "params") == "3,610"
    assert "3,385,600" in text_of(driver, "counts")
    # the working's formulas are MathML, laid out by the browser: H_out's rule ends in 31
    formulas = driver.find_elements(By.CSS_SELECTOR, "#explanation .formula math")
    assert len(formulas) > 10
    assert formulas[0].get_attribute("display") == "block" and "31" in formulas[0].text
    wait_for(
        driver,
        lambda d: "convscope conv --input 64x64x10" in text_of(d, "command-line"),
        "the command line is not shown",
    )
    screenshot(driver, "calculator", tmp_path)


def test_editing_the_stride_updates_the_answer_and_the_address(driver, server):
    driver.get(server + SEED)
    set_field(driver, "stride", "1")
    wait_for(driver, lambda d: text_of(d, "output-shape") == "10×61×61", "shape not updated")
    assert "stride=1" in driver.current_url
    assert text_of(driver, "params") == "3,610"


def test_bad_input_shows_the_clis_message(driver, server, tmp_path):
    driver.get(server + SEED)
    set_field(driver, "kernel", "0")
    expected = cli_error(
        ["conv", "--input", "64x64x10", "--layout", "hwc", "--out-channels", "10",
         "--kernel", "0", "--stride", "2", "--padding", "1"]
    )  # fmt: skip
    wait_for(driver, lambda d: text_of(d, "error") == expected, "the error is not shown")
    assert "stale" in driver.find_element(By.ID, "result").get_attribute("class")
    screenshot(driver, "calculator-error", tmp_path)
    severe_entries(driver)  # the 400s this test asked for are not console errors to report
    set_field(driver, "kernel", "6")
    wait_for(driver, lambda d: not d.find_element(By.ID, "error").is_displayed(), "error stays")


STUB_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="240" height="120">
<rect class="cell" data-grid="input" data-index="0,0,0" data-frames="0" x="0" y="0" width="20" height="20" fill="#eee"/>
<rect class="cell" data-grid="input" data-index="0,0,1" data-frames="0 1" x="20" y="0" width="20" height="20" fill="#eee"/>
<rect class="cell" data-grid="input" data-index="0,0,2" data-frames="1" x="40" y="0" width="20" height="20" fill="#eee"/>
<rect class="cell" data-grid="output" data-index="0,0,0" data-frames="0" x="100" y="0" width="20" height="20" fill="#eee"/>
<rect class="cell" data-grid="output" data-index="0,0,1" data-frames="1" x="120" y="0" width="20" height="20" fill="#eee"/>
<g class="frame" data-frame="0"><rect x="0" y="0" width="40" height="20" fill="none" stroke="blue"/></g>
<g class="frame" data-frame="1" style="display:none"><rect x="20" y="0" width="40" height="20" fill="none" stroke="blue"/></g>
</svg>"""  # noqa: E501


def visible_frames(driver: webdriver.Chrome) -> list[str]:
    groups = driver.find_elements(By.CSS_SELECTOR, "#diagram-svg g.frame")
    return [
        g.get_attribute("data-frame")
        for g in groups
        if driver.execute_script("return getComputedStyle(arguments[0]).display", g) != "none"
    ]


def test_diagram_controls_and_hover_linking_on_a_stub_drawing(driver, server, monkeypatch):
    """The page's side of the drawing's contract (frame groups, linked cells), whatever the
    real drawing holds: a two-frame stub stands in for convscope.draw.layer."""
    stub = types.ModuleType("convscope.draw.layer")
    stub.layer_svg = lambda layer, shape, **options: STUB_SVG
    monkeypatch.setitem(sys.modules, "convscope.draw.layer", stub)
    driver.get(server + SEED)
    wait_for(driver, lambda d: visible_frames(d) == ["0"], "frame 0 is not the one shown")
    index = driver.find_element(By.ID, "frame-index")
    assert index.get_attribute("data-frame") == "0"
    driver.find_element(By.ID, "frame-next").click()
    assert index.get_attribute("data-frame") == "1" and visible_frames(driver) == ["1"]
    driver.find_element(By.ID, "frame-next").click()  # wraps around
    assert visible_frames(driver) == ["0"]
    shared = driver.find_element(By.CSS_SELECTOR, 'rect.cell[data-frames="0 1"]')
    ActionChains(driver).move_to_element(shared).perform()
    linked = driver.find_elements(By.CSS_SELECTOR, "#diagram-svg rect.cell.linked")
    assert len(linked) == 5  # every cell shares frame 0 or 1 with it
    lone = driver.find_element(By.CSS_SELECTOR, 'rect.cell[data-grid="output"][data-frames="1"]')
    ActionChains(driver).move_to_element(lone).perform()
    linked = driver.find_elements(By.CSS_SELECTOR, "#diagram-svg rect.cell.linked")
    assert {c.get_attribute("data-index") + c.get_attribute("data-grid") for c in linked} == {
        "0,0,1input",
        "0,0,2input",
        "0,0,1output",
    }
    driver.find_element(By.ID, "frame-play").click()
    wait_for(driver, lambda d: visible_frames(d) == ["1"], "play does not advance")
    driver.find_element(By.ID, "frame-play").click()  # pause


def test_the_real_diagram_animates(driver, server, tmp_path):
    driver.get(server + "/?layer=conv&input=1x6x6&out_channels=1&kernel=3")
    wait_for(driver, lambda d: visible_frames(d) == ["0"], "the diagram did not load")
    frames = driver.find_elements(By.CSS_SELECTOR, "#diagram-svg g.frame")
    assert len(frames) > 1
    driver.find_element(By.ID, "frame-next").click()
    assert driver.find_element(By.ID, "frame-index").get_attribute("data-frame") == "1"
    assert visible_frames(driver) == ["1"]
    screenshot(driver, "calculator-diagram", tmp_path)


def picture_settled(driver: webdriver.Chrome) -> bool:
    """The network picture is shown, or its message is."""
    figure = driver.find_element(By.ID, "network-figure")
    return figure.is_displayed() or driver.find_element(By.ID, "figure-message").is_displayed()


def test_network_page_takes_an_uploaded_spec(driver, server, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "input: [3, 32, 32]\nlayers:\n  - conv2d: {out_channels: 8, kernel_size: 3}\n"
        "  - relu\n  - flatten\n  - linear: {out_features: 10}\n"
    )
    driver.get(server + "/network?model=lenet5")
    wait_for(driver, lambda d: text_of(d, "model-name") == "lenet5", "lenet5 not shown")
    driver.find_element(By.ID, "spec-file").send_keys(str(spec))
    wait_for(driver, lambda d: text_of(d, "model-name") == "tiny.yaml", "upload not answered")
    table = text_of(driver, "summary-table")
    assert "Conv2d" in table and "Linear" in table
    # 3·8·9 + 8 conv parameters, 8·30·30·10 + 10 linear ones
    assert text_of(driver, "total-params") == f"{3 * 8 * 9 + 8 + 8 * 30 * 30 * 10 + 10:,}"
    assert text_of(driver, "command-line") == "convscope summary tiny.yaml"
    wait_for(driver, picture_settled, "the network picture did not settle")
    assert driver.find_element(By.ID, "network-figure").is_displayed()
    screenshot(driver, "network-upload", tmp_path)


def test_pages_log_no_console_errors(driver, server, tmp_path):
    severe_entries(driver)  # start clean
    pages = {
        "calculator-pool": "/?layer=pool",
        "calculator-transpose": "/?layer=conv-transpose",
        "calculator-linear": "/?layer=linear",
        "compose": "/compose",
        "pool": "/pool",
        "network": "/network?model=resnet18",
    }
    for name, path in pages.items():
        driver.get(server + path)
        wait_for(driver, lambda d: text_of(d, "command-line"), f"{name}: the script did not run")
        if name == "network":
            wait_for(driver, picture_settled, "the network picture did not settle")
        screenshot(driver, name, tmp_path)
    assert severe_entries(driver) == []
