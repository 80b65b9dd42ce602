"""The playground at ``/`` and the CORS setting, on the real server (fake model, loopback).

Default settings: ``/`` is the playground's page and its files are served; CORS is off (a preflight
gets no ``Access-Control-Allow-Origin``). ``--no-playground --cors-origins ORIGIN``: ``/`` is 404 in
the API's error shape; a preflight from ORIGIN is allowed with the API-key header, from any other
origin it is not; answers to ORIGIN expose the request id and Retry-After. The page's files name no
other host, and the package data ships them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest
import tomllib

from service.rest.routes import playground
from tests.api.helpers import write_model
from tests.api.server_process import REPO, ServerProcess

ALLOWED = "http://app.example:3000"
OTHER = "http://elsewhere.example"
URL = re.compile(r"""https?://""")


def start(tmp_path: Path, *flags: str) -> ServerProcess:
    write_model(tmp_path, "fake")
    proc = ServerProcess(
        tmp_path / "server.log", "--model", "fake", "--model-dir", str(tmp_path), "--no-warmup", *flags
    )
    try:
        proc.wait_ready()
    except BaseException:
        proc.stop()
        raise
    return proc


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start(tmp_path_factory.mktemp("playground_default"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start(tmp_path_factory.mktemp("playground_cors"), "--no-playground", "--cors-origins", ALLOWED)
    yield proc
    proc.stop()


def preflight(server: ServerProcess, origin: str) -> httpx.Response:
    return httpx.options(server.url + "/classify", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key",
    })


def test_the_page_and_its_files_are_served_by_default(default_server: ServerProcess) -> None:
    page = httpx.get(default_server.url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r"""(?:src|href)="(static/playground/[^"]+)\"""", page.text)
    assert sorted(assets) == ["static/playground/app.js", "static/playground/style.css"]
    for asset in assets:
        answer = httpx.get(f"{default_server.url}/{asset}", timeout=10)
        assert answer.status_code == 200, asset
        assert answer.content == (playground.folder() / Path(asset).name).read_bytes()
    metrics = httpx.get(default_server.url + "/metrics", timeout=10).text
    assert 'clipserve_requests_total{protocol="rest",route="root",status="200"}' in metrics  # not route=""


def test_cors_is_off_by_default(default_server: ServerProcess) -> None:
    answer = preflight(default_server, ALLOWED)
    assert "access-control-allow-origin" not in answer.headers
    embed = httpx.post(default_server.url + "/embed", json={"inputs": [{"text": "a"}]}, headers={"Origin": ALLOWED})
    assert embed.status_code == 200
    assert "access-control-allow-origin" not in embed.headers


def test_playground_off_answers_404_in_the_api_error_shape(cors_server: ServerProcess) -> None:
    for path in ("/", "/static/playground/app.js"):
        answer = httpx.get(cors_server.url + path, timeout=10)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["type"] == "not_found", answer.text


def test_a_preflight_from_the_configured_origin_is_allowed_with_the_key_header(cors_server: ServerProcess) -> None:
    answer = preflight(cors_server, ALLOWED)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-api-key", "authorization", "x-request-id"} <= allowed
    assert "POST" in answer.headers["access-control-allow-methods"]


def test_a_preflight_from_another_origin_is_not(cors_server: ServerProcess) -> None:
    answer = preflight(cors_server, OTHER)
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers


def test_answers_to_the_origin_expose_the_request_id_and_retry_after(cors_server: ServerProcess) -> None:
    answer = httpx.post(
        cors_server.url + "/embed", json={"inputs": [{"text": "a"}]}, headers={"Origin": ALLOWED}, timeout=10
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "retry-after"} <= exposed
    error = httpx.post(cors_server.url + "/embed", json={"inputs": []}, headers={"Origin": ALLOWED}, timeout=10)
    assert error.status_code == 422
    assert error.headers["access-control-allow-origin"] == ALLOWED  # the browser may read the error body
    other = httpx.post(cors_server.url + "/embed", json={"inputs": [{"text": "a"}]}, headers={"Origin": OTHER})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("name", playground.FILES)
def test_the_files_name_no_other_host(name: str) -> None:
    text = (playground.folder() / name).read_text()
    assert not URL.findall(text), f"{name} names a URL with a host"


def test_the_package_data_ships_the_files() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    for name in playground.FILES:
        assert any(fnmatch(f"rest/playground/{name}", p) for p in patterns), name
