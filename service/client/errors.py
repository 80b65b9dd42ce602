"""The client's error: the server's error kind, its protocol status, and whether a retry may help."""

from __future__ import annotations

from service.protocol.errors import ErrorKind

RETRYABLE_KINDS = frozenset({ErrorKind.OVERLOADED, ErrorKind.UNAVAILABLE})


class RequestFailed(Exception):
    """A call the server refused or could not finish.

    ``kind`` is the same ``ErrorKind`` the server raised (whatever the protocol); ``status`` is the
    HTTP status code (REST) or the gRPC status code name (gRPC); ``retry_after_s`` is the server's
    hint, if it sent one.
    """

    def __init__(
        self, message: str, kind: ErrorKind, status: int | str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        """True for overload (429 / RESOURCE_EXHAUSTED queue full) and unavailability (503 / UNAVAILABLE)."""
        return self.kind in RETRYABLE_KINDS

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"
