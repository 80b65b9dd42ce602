"""Domain errors shared by every layer; each carries an ``ErrorKind`` that front ends map to a status.

The kinds and their HTTP and gRPC codes live in ``service.protocol.errors`` (clients share them).
Lower layers raise these; nothing lower imports a front end.
"""

from __future__ import annotations

from service.protocol.errors import HTTP_STATUS, ErrorKind


class ClipServeError(Exception):
    """An error with a kind (which decides the status) and a message for the client."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, kind: ErrorKind | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.retry_after_s = retry_after_s

    @property
    def http_status(self) -> int:
        """The HTTP status code for this error."""
        return HTTP_STATUS[self.kind]


class InvalidInput(ClipServeError):
    """The request is malformed or an item cannot be used (bad image, wrong type...)."""

    kind = ErrorKind.INVALID


class LimitExceeded(ClipServeError):
    """The request is over a configured size limit."""

    kind = ErrorKind.TOO_LARGE


class NotFound(ClipServeError):
    """An unknown model or label set."""

    kind = ErrorKind.NOT_FOUND


class Overloaded(ClipServeError):
    """The queue is full; retry later."""

    kind = ErrorKind.OVERLOADED


class DeadlineExceeded(ClipServeError):
    """The request's deadline passed before its result was ready."""

    kind = ErrorKind.TIMEOUT


class Unavailable(ClipServeError):
    """The server is not ready or is draining."""

    kind = ErrorKind.UNAVAILABLE


class Cancelled(ClipServeError):
    """The client cancelled or disconnected."""

    kind = ErrorKind.CANCELLED


class InferenceError(ClipServeError):
    """Model compute failed for a batch."""

    kind = ErrorKind.INTERNAL


class StartupError(ClipServeError):
    """The server cannot start as configured: a setting or a model does not work on this machine.

    Raised while loading models, never for a request: it is the operator's to fix, not a client's.
    ``setting`` names the ``Settings`` field to look at (``onnx_providers``), when one is to blame.
    """

    kind = ErrorKind.INTERNAL

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
