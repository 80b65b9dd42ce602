"""Domain errors shared by every layer; each front end maps an error kind to its own status.

REST maps ``ErrorKind`` to an HTTP status, gRPC to a status code (see ``HTTP_STATUS`` and
``service.grpc`` for the gRPC mapping). Lower layers raise these; nothing lower imports a front end.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(str, Enum):
    """What went wrong, independent of the protocol that reports it."""

    INVALID = "invalid_argument"  # bad input: 422 / INVALID_ARGUMENT
    TOO_LARGE = "too_large"  # over a size limit: 413 / RESOURCE_EXHAUSTED
    NOT_FOUND = "not_found"  # unknown model or label set: 404 / NOT_FOUND
    OVERLOADED = "overloaded"  # queue full: 429 / RESOURCE_EXHAUSTED
    TIMEOUT = "timeout"  # deadline passed: 504 / DEADLINE_EXCEEDED
    UNAVAILABLE = "unavailable"  # not ready or shutting down: 503 / UNAVAILABLE
    CANCELLED = "cancelled"  # the client went away: 499 / CANCELLED
    INTERNAL = "internal"  # a crashed batch or a bug: 500 / INTERNAL


HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 422,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.OVERLOADED: 429,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.CANCELLED: 499,
    ErrorKind.INTERNAL: 500,
}


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
