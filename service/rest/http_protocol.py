"""uvicorn's httptools protocol with a timeout for receiving a request's headers (slowloris).

uvicorn closes idle keep-alive connections but gives a request's headers all the time in the world:
a client that sends a header line now and then holds a connection (and a slot of
``limit_concurrency``) forever. ``header_timeout_protocol(seconds)`` is ``HttpToolsProtocol`` with a
timer that runs from the connection's start and from each request's first byte until its headers are
complete; when it fires the client gets ``408`` (``{"error": {"type": "timeout", ...}}``,
``Connection: close``) and the connection closes. The body has its own timeout
(``body_timeout_s``, service.rest.admission).

Needs httptools (a dependency; service.server falls back to uvicorn's ``auto`` without it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.protocol.errors import ErrorKind

__all__ = ["HeaderTimeoutProtocol", "header_timeout_protocol"]

log = logging.getLogger(__name__)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that answers 408 and closes when headers take over ``header_timeout_s``.

    Use ``header_timeout_protocol(seconds)`` for a subclass with another timeout.
    """

    header_timeout_s: ClassVar[float] = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    # Protocol interface
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()  # a connection that never sends a full request line is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    # The timer
    def _start_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's headers wait behind an earlier request's response (uvicorn
            # pauses reading meanwhile): that is the server's time, not the client's; a 408 now
            # would also cut into that response. Count again from here.
            self._start_header_timer()
            return
        log.debug("%s: request headers not complete within %g s; 408 and close", self.client, self.header_timeout_s)
        self._send_408()

    def _send_408(self) -> None:
        """A minimal 408 in the API's error shape, then close (uvicorn's ``send_400_response`` style)."""
        message = f"request headers not received within {self.header_timeout_s:g} s (header_timeout_s)"
        body = json.dumps({"error": {"type": ErrorKind.TIMEOUT.value, "message": message}}).encode()
        content = [STATUS_LINE[408]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
            body,
        ])
        self.transport.write(b"".join(content))
        self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """A ``HeaderTimeoutProtocol`` subclass with ``header_timeout_s = seconds``, for ``uvicorn.Config(http=)``.

    uvicorn instantiates the class itself (``http_protocol_class(config=, server_state=, app_state=)``),
    so the timeout travels as a class attribute of a class made for this config, not a global.
    """
    if not seconds > 0:
        raise ValueError(f"header timeout must be > 0 s, got {seconds!r}")
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": float(seconds)})
