"""``/docs`` (Swagger UI) and ``/redoc`` work with no network: their files come from the server.

The real server (fake model) serves both pages. Without a browser: their HTML names no other host,
and every file it loads is served. With one: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium), cut off from every host but 127.0.0.1, renders both pages
until the endpoints show; every resource the page loaded came from the server; a screenshot of each
lands in the test's ``tmp_path``. The browser tests skip, saying why, when no browser or driver starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.api.browser import RENDER_TIMEOUT_S, Trap, assert_not_blank, assert_stayed_local
from tests.api.helpers import write_model
from tests.api.server_process import ServerProcess

ENDPOINTS = ("/embed", "/classify", "/similarity")
SUMMARIES = ("Embed texts and images", "Zero-shot classification", "Similarity matrices")
URL = re.compile(r"""https?://[^\s"'<>)]+""")
ASSET = re.compile(r"""(?:src|href)="([^"]+)\"""")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("docs_browser")
    write_model(tmp_path, "fake")
    proc = ServerProcess(tmp_path / "server.log", "--model", "fake", "--model-dir", str(tmp_path), "--no-warmup")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_page_names_no_other_host_and_its_files_are_served(server: ServerProcess, page: str) -> None:
    html = httpx.get(server.url + page, timeout=10)
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    foreign = [url for url in URL.findall(html.text) if urlsplit(url).hostname != "127.0.0.1"]
    assert not foreign, f"{page} names other hosts: {foreign}"
    assets = ASSET.findall(html.text)
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        answer = httpx.get(urljoin(server.url + page, asset), timeout=10)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 1000, asset  # a real file (favicon, CSS, a script bundle), not a stub


def test_swagger_ui_renders_the_endpoints_offline(
    server: ServerProcess, browser: Any, trap: Trap, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    trap.requests.clear()
    browser.get(server.url + "/docs")

    def paths_shown(driver: Any) -> set[str]:
        blocks = driver.find_elements(By.CSS_SELECTOR, ".opblock .opblock-summary-path")
        return {e.text.replace("\u200b", "") for e in blocks}  # Swagger UI breaks paths with zero-width spaces

    WebDriverWait(browser, RENDER_TIMEOUT_S).until(
        lambda d: set(ENDPOINTS) <= paths_shown(d), message=f"Swagger UI never listed {ENDPOINTS}"
    )
    assert "clipserve" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
    screenshot = tmp_path / "docs.png"
    assert browser.save_screenshot(str(screenshot))
    assert_not_blank(screenshot)
    assert_stayed_local(trap, browser)


def test_redoc_renders_the_endpoints_offline(server: ServerProcess, browser: Any, trap: Trap, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    trap.requests.clear()
    browser.get(server.url + "/redoc")
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(
        lambda d: all(s in d.find_element(By.TAG_NAME, "body").text for s in SUMMARIES),
        message=f"ReDoc never listed {SUMMARIES}",
    )
    source = browser.page_source
    for path in ENDPOINTS:
        assert f">{path}<" in source or f"{path}</" in source, f"ReDoc shows no {path}"
    screenshot = tmp_path / "redoc.png"
    assert browser.save_screenshot(str(screenshot))
    assert_not_blank(screenshot)
    assert_stayed_local(trap, browser)
