"""Error kinds, and the HTTP status and gRPC status code each one maps to."""

from __future__ import annotations

from enum import Enum

import grpc


class ErrorKind(str, Enum):
    """What went wrong, independent of the protocol that reports it."""

    INVALID = "invalid_argument"  # bad input: 422 / INVALID_ARGUMENT
    TOO_LARGE = "too_large"  # over a size limit: 413 / RESOURCE_EXHAUSTED
    NOT_FOUND = "not_found"  # unknown model or label set: 404 / NOT_FOUND
    OVERLOADED = "overloaded"  # over capacity: 429 / RESOURCE_EXHAUSTED
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

# Retry-After (REST header, gRPC trailer ``retry-after``) when an error gives none: every overload and
# unavailability says when to come back (a draining replica: long enough for the load balancer to
# take it out).
DEFAULT_RETRY_AFTER_S: dict[ErrorKind, float] = {ErrorKind.OVERLOADED: 1.0, ErrorKind.UNAVAILABLE: 5.0}

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
