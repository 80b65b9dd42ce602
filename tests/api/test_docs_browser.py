"""``/docs`` (Swagger UI) and ``/redoc`` work with no network: their files come from the server.

The real server (fake model) serves both pages. Without a browser: their HTML names no other host,
and every file it loads is served. With one: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium), cut off from every host but 127.0.0.1, renders both pages
until the endpoints show; every resource the page loaded came from the server; a screenshot of each
lands in the test's ``tmp_path``. The browser tests skip, saying why, when no browser or driver starts.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from PIL import Image

from tests.api.helpers import write_model
from tests.api.server_process import ServerProcess

ENDPOINTS = ("/embed", "/classify", "/similarity")
SUMMARIES = ("Embed texts and images", "Zero-shot classification", "Similarity matrices")
RENDER_TIMEOUT_S = 60
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


def chromium_and_driver() -> tuple[str, str]:
    """Paths of a Chromium and its chromedriver, or skip saying which is missing."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (.ci/run tries to)")
    return browser, driver


class Trap:
    """The browser's proxy: every request for another host comes here; it is noted and refused."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
                except OSError:
                    self.requests.append("(a connection that sent nothing)")

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    proxy = Trap()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def browser(trap: Trap) -> Iterator[Any]:
    """Headless Chromium that reaches 127.0.0.1 only: all else goes to ``trap``."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
    from selenium.common.exceptions import WebDriverException

    binary, driver_path = chromium_and_driver()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1600",
        # No network but loopback (which Chromium never proxies): every other request goes to the trap,
        # and any name looked up outside the proxy resolves nowhere.
        f"--proxy-server=http://127.0.0.1:{trap.port}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver_path)
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        pytest.skip(f"headless Chromium ({binary}, {driver_path}) did not start: {exc.msg}")
    try:
        driver.set_page_load_timeout(RENDER_TIMEOUT_S)
        yield driver
    finally:
        driver.quit()


def page_hosts(driver: Any) -> set[str]:
    """The hosts of everything the page asked for (Resource Timing lists even the requests refused)."""
    urls: list[str] = driver.execute_script(
        "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
    )
    return {host for url in urls if (host := urlsplit(url).hostname)}


def trapped_hosts(trap: Trap) -> set[str]:
    """The hosts the browser tried to reach through the trap (``CONNECT host:443``, ``GET http://host/``)."""
    hosts = set()
    for line in trap.requests:
        target = line.split(" ")[1] if line.count(" ") >= 2 else ""
        hosts.add(urlsplit(target if "://" in target else f"//{target}").hostname or line)
    return hosts


def assert_stayed_local(trap: Trap, driver: Any) -> None:
    """No request of the page left the machine, and the console logged no error.

    The trap also sees Chromium's own background calls (sign-in, autofill): only the page's hosts count.
    """
    reached = page_hosts(driver) & trapped_hosts(trap)
    assert not reached, f"the page reached for other hosts: {reached} ({trap.requests})"
    errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    # The page's Content-Security-Policy keeps ReDoc from fetching its vendor's logo, and says so.
    errors = [e for e in errors if not ("cdn.redoc.ly/redoc/logo-mini.svg" in e and "Content Security Policy" in e)]
    assert not errors, f"console errors: {errors}"


def assert_not_blank(screenshot: Path) -> None:
    with Image.open(screenshot) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colors is None or len(colors) > 20, f"{screenshot} is (nearly) one colour: blank"


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
