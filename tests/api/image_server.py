"""A real HTTP server on 127.0.0.1 that serves test images, for the image URL tests.

Routes: ``/img/<name>`` (the images given), ``/redirect?to=URL`` (302 there), ``/loop/<n>`` (302 to
``/loop/<n+1>`` forever), ``/huge`` (an endless body, no Content-Length), ``/huge-declared`` (a
Content-Length over any limit, no body), ``/slow`` (headers and a few bytes, then nothing until the test
ends), ``/page`` (an HTML page), anything else 404. It counts the connections it accepts and records
each request's path; ``/slow`` sets ``slow_started`` when it is reached.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHUNK = b"\0" * 65536
HUGE_LIMIT = 64 * 1024 * 1024  # the endless body ends here at the latest (the fetcher stops long before)


class ImageServer(ThreadingHTTPServer):
    """The server: ``images`` by name; ``connections`` and ``paths`` seen; events for the slow route."""

    daemon_threads = True

    def __init__(self, images: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.images = images
        self.connections = 0
        self.paths: list[str] = []
        self.slow_started = threading.Event()
        self.release = threading.Event()  # set when the test ends: the slow route finishes then

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count each accepted connection."""
        self.connections += 1
        super().process_request(request, client_address)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """``http://host:port/path``."""
        return f"http://{host}:{self.server_address[1]}{path}"


class Handler(BaseHTTPRequestHandler):
    """The routes above."""

    server: ImageServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        """Answer by path."""
        self.server.paths.append(self.path)
        path = urlsplit(self.path).path
        if path.startswith("/img/") and path[5:] in self.server.images:
            self._answer(200, self.server.images[path[5:]], "application/octet-stream")
        elif path == "/redirect":
            self._redirect(parse_qs(urlsplit(self.path).query)["to"][0])
        elif path.startswith("/loop/"):
            self._redirect(f"/loop/{int(path[6:]) + 1}")
        elif path == "/huge":
            self._endless()
        elif path == "/huge-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(HUGE_LIMIT))
            self.end_headers()
        elif path == "/slow":
            self._slow()
        elif path == "/page":
            self._answer(200, b"<html><body>not an image</body></html>", "text/html")
        else:
            self._answer(404, b"no such thing", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _endless(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for _ in range(HUGE_LIMIT // len(CHUNK)):
                self.wfile.write(CHUNK)
        except OSError:
            pass  # the fetcher hung up past its limit

    def _slow(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"\x89PNG")
        self.wfile.flush()
        self.server.slow_started.set()
        self.server.release.wait(30)
        self.close_connection = True


@contextmanager
def image_server(images: dict[str, bytes]) -> Iterator[ImageServer]:
    """An ``ImageServer`` serving in a thread; stopped (and its slow answers released) afterwards."""
    server = ImageServer(images)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="image-server")
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
