"""Headers that trickle in (slowloris) get 408 and a closed connection after ``header_timeout_s``.

The real server (``python -m service serve``, uvicorn with service.rest.http_protocol) on a fake model,
spoken to over raw sockets.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.helpers import write_model
from tests.api.server_process import ServerProcess

HEADER_TIMEOUT_S = 1
FAILURE_BOUND_S = 10  # socket timeout: only reached if the server never answers or never closes
BODY = json.dumps({"inputs": [{"text": "a photo of a cat"}]}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp("header_timeout")
    write_model(tmp_path, "fake")
    proc = ServerProcess(tmp_path / "server.log", "--model", "fake", "--model-dir", str(tmp_path), "--no-warmup",
                         "--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", "10")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=FAILURE_BOUND_S)
    sock.settimeout(FAILURE_BOUND_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (recv returns b"")."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status_line, headers, body


def test_headers_that_never_finish_get_408_and_the_connection_closes(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        started = time.monotonic()
        raw = read_until_closed(sock)  # socket.timeout here: no answer or no close within the bound
        waited = time.monotonic() - started
    status_line, headers, body = split_response(raw)
    assert status_line == "HTTP/1.1 408 Request Timeout", raw
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert "retry-after" not in headers
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"error": {
        "type": "timeout", "message": "request headers not received within 1 s (header_timeout_s)"}}
    assert waited >= HEADER_TIMEOUT_S * 0.9  # the timer, not something else, cut it


def test_a_normal_request_on_another_connection_still_gets_200(server: ServerProcess) -> None:
    with connect(server) as slow:
        slow.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\n")
        response = httpx.post(f"{server.url}/embed", content=BODY,
                              headers={"content-type": "application/json"}, timeout=FAILURE_BOUND_S)
        assert response.status_code == 200, response.text
        assert split_response(read_until_closed(slow))[0] == "HTTP/1.1 408 Request Timeout"


def test_complete_headers_with_a_slow_body_are_not_cut_by_the_header_timer(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n")
        time.sleep(HEADER_TIMEOUT_S * 1.5)  # past the header timeout: body time, within body_timeout_s
        sock.sendall(BODY)
        status_line, _, body = split_response(read_until_closed(sock))
    assert status_line == "HTTP/1.1 200 OK", body
    assert "error" not in json.loads(body)
