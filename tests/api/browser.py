"""Headless Chromium for the browser tests, cut off from every host but 127.0.0.1.

Debian's ``chromium`` and ``chromium-driver``, driven by Selenium; the fixtures (``trap``, ``browser``,
module-scoped, shared through tests/api/conftest.py) skip, saying why, when no browser or driver starts.
Every request for another host goes to ``Trap``, a proxy that notes it and answers nothing.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

RENDER_TIMEOUT_S = 60


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
