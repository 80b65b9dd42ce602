"""How error kinds map to gRPC status codes, and the trailing metadata that goes with them.

An error's kind travels as trailing metadata ``clipserve-error-kind`` and, for overload, the
server's hint as ``retry-after`` (seconds), so a client can tell "queue full, retry" apart from
"request too large, don't" although both are RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import grpc

from service.errors import ClipServeError
from service.protocol.errors import GRPC_STATUS
from service.protocol.headers import ERROR_KIND_KEY, RETRY_AFTER_KEY


def status_of(error: ClipServeError) -> grpc.StatusCode:
    """The gRPC status code for a domain error."""
    return GRPC_STATUS[error.kind]


def trailing_metadata(error: ClipServeError) -> tuple[tuple[str, str], ...]:
    """The error kind, and the retry hint when the server gave one."""
    pairs = [(ERROR_KIND_KEY, error.kind.value)]
    if error.retry_after_s is not None:
        pairs.append((RETRY_AFTER_KEY, f"{error.retry_after_s:g}"))
    return tuple(pairs)
