"""report.html and audit.html: one offline page each, checked in a real browser (Debian's
chromium driven by Selenium): no console error, no request beyond the file, the map draws every
point, a confusion cell shows exactly its photos, hover shows a photo, the colouring switch
changes the legend, and 100,000 points load within the bound we set."""
import json
import re
import shutil
import time

import numpy as np
import pytest

import cnncodes
from conftest import make_folder, run_cli

LITE = ["--backbone", "efficientnet_lite0", "--crop-size", "64", "--no-progress", "--workers", "0"]
LOAD_BOUND_S = 10.0  # 100,000 points, from navigation to drawn (measured: see docs/benchmarks.md)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    make_folder(str(root / "images" / "train"), per_class=8)
    make_folder(str(root / "images" / "val"), per_class=4, start=50)
    run_cli("extract", root / "images", "--cache", root / "c.h5", *LITE)
    run_cli("compare", root / "c.h5", "--classifiers", "logreg,centroid", "--report", root / "report")
    run_cli("audit", root / "c.h5", "--threshold", "0.9", "--report", root / "audit")
    return root


def test_the_pages_are_self_contained(reports):
    for page in (reports / "report" / "report.html", reports / "audit" / "audit.html"):
        text = page.read_text()
        assert "Content-Security-Policy" in text and "default-src 'none'" in text
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing fetched from anywhere
        assert text.count("data:image/jpeg;base64,") >= 12  # the photos themselves, inline


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs a real browser: Debian's chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the [test] extra")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)  # the system driver: nothing downloaded
    yield chrome
    chrome.quit()


def _open(browser, page, timeout=30.0):
    started = time.perf_counter()
    browser.get(page.as_uri())
    while not browser.execute_script("return !!(window.report && window.report.ready)"):
        assert time.perf_counter() - started < timeout, f"{page} never got ready"
        time.sleep(0.02)
    return time.perf_counter() - started


def _requests(browser) -> list:
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_the_compare_page_in_a_browser(reports, browser):
    page = reports / "report" / "report.html"
    browser.get_log("performance"), browser.get_log("browser")  # start clean
    _open(browser, page)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert all(u.startswith(("file://", "data:")) for u in _requests(browser))
    with cnncodes.open_cache(reports / "c.h5") as c:
        rows = len(c)
    assert browser.execute_script("return window.report.pointsDrawn") == rows == 36
    matrix = json.loads((reports / "report" / "report.json").read_text())["results"]
    best = max((r for r in matrix if "accuracy" in r), key=lambda r: (r["accuracy"], r["balanced_accuracy"]))
    cm = np.array(best["confusion_matrix"])
    for t, p in [(0, 0), *zip(*np.nonzero(cm * (1 - np.eye(len(cm)))))][:3]:  # a diagonal cell and any mistakes
        browser.find_element("css selector", f'td.cell[data-t="{t}"][data-p="{p}"]').click()
        shown = browser.find_elements("css selector", "#cell-photos figure")
        assert len(shown) == cm[t, p], (t, p)
    legend = browser.find_element("id", "legend").text
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element("id", "colouring")).select_by_value("split")
    assert browser.find_element("id", "legend").text != legend and "val" in browser.find_element("id", "legend").text
    assert browser.execute_script("return window.report.colouring") == "split"


def test_hover_shows_a_photo_and_click_its_neighbours(reports, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    _open(browser, reports / "audit" / "audit.html")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    canvas = browser.find_element("id", "map")
    row = browser.execute_script("return window.report.embeddedRows[0]")
    x, y = browser.execute_script(f"return window.report.pointAt({row})")
    width, height = canvas.size["width"], canvas.size["height"]
    ActionChains(browser).move_to_element_with_offset(canvas, x - width / 2, y - height / 2).perform()
    tip = browser.find_element("id", "tip")
    assert tip.is_displayed() and tip.find_elements("tag name", "img")
    hovered = browser.execute_script("return window.report.hovered")
    ActionChains(browser).click().perform()
    near = browser.find_element("id", "neighbours")
    assert int(near.get_attribute("data-row")) == hovered and len(near.find_elements("css selector", "figure")) == 9


def test_a_hundred_thousand_points_load_within_the_bound(tmp_path, browser):
    from cnncodes.classify import report_html as page
    rng = np.random.default_rng(0)
    n = 100_000
    X = rng.normal(size=(5, 64))[np.arange(n) % 5] + rng.normal(size=(n, 64))
    started = time.perf_counter()
    payload = {"map": page.map_payload(X, [f"c{i % 5}/{i:06d}.jpg" for i in range(n)],
                                       {"class": ([f"c{k}" for k in range(5)], np.arange(n) % 5)},
                                       page.bounded_rows(n, []), None)}
    written = page.write_page(str(tmp_path / "big.html"), "big", [page.map_section(payload["map"])], payload)
    built = time.perf_counter() - started
    seconds = _open(browser, tmp_path / "big.html", timeout=60)
    assert browser.execute_script("return window.report.pointsDrawn") == n
    print(f"100,000 points: built in {built:.1f} s, {written['bytes'] / 1e6:.1f} MB, loaded in {seconds:.2f} s")
    assert seconds < LOAD_BOUND_S


def test_the_map_beyond_tsne_is_scikit_learns_pca_a_block_at_a_time():
    """Past TSNE_ROWS the map is the first two principal components of the unit-length codes,
    summed a block of rows at a time (no centred copy of every code): the same points, signs
    included, as scikit-learn's PCA on the whole matrix."""
    from sklearn.decomposition import PCA

    from cnncodes.classify.report_html import _unit, principal_plane
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (3, 40))[rng.integers(0, 3, 2500)] * 3 + rng.normal(0, 1, (2500, 40))
    expected = PCA(n_components=2, svd_solver="full").fit_transform(_unit(X))
    np.testing.assert_allclose(principal_plane(X, block=300), expected, atol=1e-4)


def test_the_map_past_its_fit_rows_takes_its_axes_from_a_sample(monkeypatch):
    """Past PLANE_FIT_ROWS the axes come from a seeded sample of rows and every row is projected:
    the same picture as the axes of every row (a map's two axes need no more), not the same bits."""
    from cnncodes.classify import report_html
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (3, 40))[rng.integers(0, 3, 2500)] * 3 + rng.normal(0, 1, (2500, 40))
    every = report_html.principal_plane(X, block=300)
    monkeypatch.setattr(report_html, "PLANE_FIT_ROWS", 500)
    sampled = report_html.principal_plane(X, block=300)
    assert sampled.shape == every.shape and not np.array_equal(sampled, every)
    for axis in range(2):
        assert np.corrcoef(sampled[:, axis], every[:, axis])[0, 1] > 0.99
