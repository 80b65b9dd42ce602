"""How error kinds map to gRPC status codes, and the trailing metadata that goes with them.

An error's kind travels as trailing metadata ``clipserve-error-kind`` and, for overload, the
server's hint as ``retry-after`` (seconds), so a client can tell "queue full, retry" apart from
"request too large, don't" although both are RESOURCE_EXHAUSTED. The call's request id
(``x-request-id``, set as its trailers when it started) goes with them.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from service.errors import ClipServeError
from service.protocol.errors import DEFAULT_RETRY_AFTER_S, GRPC_STATUS
from service.protocol.headers import ERROR_KIND_KEY, RETRY_AFTER_KEY


def status_of(error: ClipServeError) -> grpc.StatusCode:
    """The gRPC status code for a domain error."""
    return GRPC_STATUS[error.kind]


def trailing_metadata(
    error: ClipServeError, kept: Iterable[tuple[str, str]] | None = ()
) -> tuple[tuple[str, str], ...]:
    """The trailers to abort with: ``kept`` (those set before, i.e. the request id), the error kind, and
    the retry hint when the server gave one.

    ``context.abort`` replaces the trailers set before with the ones it is given; pass them in
    ``kept`` (``context.trailing_metadata()``) so that they still reach the client.
    """
    pairs = [*(kept or ()), (ERROR_KIND_KEY, error.kind.value)]
    retry_after_s = error.retry_after_s if error.retry_after_s is not None else DEFAULT_RETRY_AFTER_S.get(error.kind)
    if retry_after_s is not None:
        pairs.append((RETRY_AFTER_KEY, f"{retry_after_s:g}"))
    return tuple(pairs)
