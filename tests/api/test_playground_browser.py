"""The playground in a real browser: headless Chromium (tests/api/browser.py) on the real server.

With the demo model: load ``/``, upload a CIFAR-10 test JPEG, type the ten CIFAR-10 labels, classify;
the labels and scores shown are ``/classify``'s for the same image and labels, and then for the
built-in ``cifar10`` label set. Then the similarity view with 2 images x 3 texts: a 2 x 3 matrix
showing ``/similarity``'s cosines (rounded as shown). Screenshots land in the test's ``tmp_path``; no
request of the page left 127.0.0.1. With API keys (two fake models): the page shows the key field,
says when a key is refused, lists both models once given the right one (the picker shows each one's
dimension), and shows the API's own message for an image that does not decode.
Skips, saying why, without a browser, the demo model or the shared CIFAR-10.
"""

from __future__ import annotations

import base64
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.clip.labelsets import get_label_set
from tests.api.browser import RENDER_TIMEOUT_S, Trap, assert_not_blank, assert_stayed_local, page_hosts
from tests.api.helpers import write_model
from tests.api.server_process import REPO, ServerProcess
from tests.shared_data import require_cifar10

DEMO_CONFIG = REPO / "models" / "clipserve-demo" / "config.json"
IMAGES = ("test/cat/0000.jpg", "test/ship/0000.jpg")
TEXTS = ("a photo of a cat", "a photo of a ship", "a photo of a truck")
TOP_K = 5  # the page's default
KEY = "playground-test-key-0123456789"


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not DEMO_CONFIG.is_file():
        pytest.skip(f"the bundled demo model is not there ({DEMO_CONFIG.relative_to(REPO)})")
    proc = ServerProcess(tmp_path_factory.mktemp("playground_browser") / "server.log", "--model", "clipserve-demo")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def cifar_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two CIFAR-10 test JPEGs (a cat, a ship) as files the browser can upload."""
    folder = tmp_path_factory.mktemp("cifar")
    files = []
    with tarfile.open(require_cifar10() / "test.tar") as tar:
        for name in IMAGES:
            data = tar.extractfile(name)
            assert data is not None, name
            path = folder / name.replace("/", "_")
            path.write_bytes(data.read())
            files.append(path)
    return files


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def wait_for(driver: Any, selector: str, count: int | None = None, message: str = "") -> list[Any]:
    """The elements matching ``selector`` once there are some (``count`` of them, when given)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d: Any) -> list[Any] | bool:
        elements = d.find_elements(By.CSS_SELECTOR, selector)
        return elements if elements and (count is None or len(elements) == count) else False

    result: list[Any] = WebDriverWait(driver, RENDER_TIMEOUT_S).until(found, message=message or f"no {selector}")
    return result


def upload(driver: Any, files: list[Path], total: int) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    wait_for(driver, "#thumbs li", total, "the thumbnails never showed")


def page_error(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "error")
    return str(box.text) if box.is_displayed() else ""


def test_classify_then_similarity_match_the_api(
    demo_server: ServerProcess, cifar_files: list[Path], browser: Any, trap: Trap, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import Select, WebDriverWait

    labels = list(get_label_set("cifar10").classes)
    assert len(labels) == 10
    trap.requests.clear()
    browser.get(demo_server.url + "/")
    info = wait_for(browser, "#model-info")[0]
    dimension = httpx.get(demo_server.url + "/models", timeout=10).json()["data"][0]["dimension"]
    assert f"{dimension}-d" in info.text

    upload(browser, cifar_files[:1], 1)
    browser.find_element(By.ID, "labels").send_keys("\n".join(labels))
    browser.find_element(By.ID, "classify-run").click()
    rows = wait_for(browser, "#classify-results .bar-row", TOP_K, f"no results; page says: {page_error(browser)}")
    shown = [(r.find_element(By.CLASS_NAME, "label").text, r.find_element(By.CLASS_NAME, "score").text) for r in rows]
    expected = httpx.post(demo_server.url + "/classify", timeout=60, json={
        "images": [b64(cifar_files[0])], "labels": labels, "top_k": TOP_K,
    }).json()["results"][0]["labels"]
    assert shown[0][0] == expected[0]["label"]
    for (label, score), want in zip(shown, expected, strict=True):
        assert label == want["label"] and abs(float(score) - want["score"]) <= 5e-4 + 1e-9, (shown, expected)
    assert "ms" in browser.find_element(By.ID, "classify-latency").text
    assert browser.save_screenshot(str(tmp_path / "classify.png"))

    # The built-in label set instead (the page lists the sets from /openapi.json).
    Select(browser.find_element(By.ID, "label-set")).select_by_value("cifar10")
    assert not browser.find_element(By.ID, "labels").is_enabled()
    browser.find_element(By.ID, "classify-run").click()
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(staleness_of(rows[0]), message="the results never changed")
    rows = wait_for(browser, "#classify-results .bar-row", TOP_K, f"no results; page says: {page_error(browser)}")
    expected = httpx.post(demo_server.url + "/classify", timeout=60, json={
        "images": [b64(cifar_files[0])], "label_set": "cifar10", "top_k": TOP_K,
    }).json()["results"][0]["labels"]
    assert [r.find_element(By.CLASS_NAME, "label").text for r in rows] == [e["label"] for e in expected]

    upload(browser, cifar_files[1:], 2)
    browser.find_element(By.ID, "tab-similarity").click()
    browser.find_element(By.ID, "texts").send_keys("\n".join(TEXTS))
    browser.find_element(By.ID, "similarity-run").click()
    cells = wait_for(browser, "#matrix tbody td", 6, f"no matrix; page says: {page_error(browser)}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#matrix tbody tr")) == 2
    assert [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#matrix thead th[scope=col]")] == list(TEXTS)
    cosine = httpx.post(demo_server.url + "/similarity", timeout=60, json={
        "images": [b64(f) for f in cifar_files], "texts": list(TEXTS),
    }).json()["cosine"]
    shown_values = [float(c.text) for c in cells]
    wanted = [value for row in cosine for value in row]
    assert all(abs(v - w) <= 5e-4 + 1e-9 for v, w in zip(shown_values, wanted, strict=True)), (shown_values, cosine)

    screenshot = tmp_path / "similarity.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    assert_not_blank(screenshot)
    assert page_hosts(browser) == {"127.0.0.1"}
    assert_stayed_local(trap, browser)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("playground_keys")
    write_model(tmp_path, "fake")
    write_model(tmp_path, "fake-b", embed_dim=16)
    proc = ServerProcess(
        tmp_path / "server.log", "--model", "fake,fake-b", "--model-dir", str(tmp_path), "--no-warmup",
        env={**os.environ, "CLIPSERVE_API_KEY": KEY},
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_with_api_keys_the_page_asks_for_one_then_picks_models_and_shows_api_errors(
    keyed_server: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(keyed_server.url + "/")
    field = wait_for(browser, "#key-section:not([hidden]) #api-key", 1, "the API-key field never showed")[0]
    assert "API key" in page_error(browser)
    field.send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(lambda d: "refused" in page_error(d), message="no refusal shown")
    field.clear()
    field.send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_for(browser, "#model option", 2, f"the two models never listed; page says: {page_error(browser)}")
    assert page_error(browser) == ""
    assert "32-d" in browser.find_element(By.ID, "model-info").text
    Select(browser.find_element(By.ID, "model")).select_by_value("fake-b")
    assert "16-d" in browser.find_element(By.ID, "model-info").text

    bogus = tmp_path / "bogus.jpg"
    bogus.write_bytes(b"not an image at all")
    upload(browser, [bogus], 1)
    browser.find_element(By.ID, "labels").send_keys("cat, dog")
    browser.find_element(By.ID, "classify-run").click()
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(lambda d: "HTTP 422" in page_error(d), message="no error shown")
    assert "images[0] (bogus.jpg): not an image" in page_error(browser)
