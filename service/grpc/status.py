"""How error kinds map to gRPC status codes, and the trailing metadata that goes with them.

An error's kind travels as trailing metadata ``clipserve-error-kind`` and, for overload, the
server's hint as ``retry-after`` (seconds), so a client can tell "queue full, retry" apart from
"request too large, don't" although both are RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import grpc

from service.errors import ClipServeError, ErrorKind

ERROR_KIND_KEY = "clipserve-error-kind"
RETRY_AFTER_KEY = "retry-after"
API_KEY_HEADER = "x-api-key"

GRPC_STATUS: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


def status_of(error: ClipServeError) -> grpc.StatusCode:
    """The gRPC status code for a domain error."""
    return GRPC_STATUS[error.kind]


def trailing_metadata(error: ClipServeError) -> tuple[tuple[str, str], ...]:
    """The error kind, and the retry hint when the server gave one."""
    pairs = [(ERROR_KIND_KEY, error.kind.value)]
    if error.retry_after_s is not None:
        pairs.append((RETRY_AFTER_KEY, f"{error.retry_after_s:g}"))
    return tuple(pairs)
