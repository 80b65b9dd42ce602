"""Structured logging: stdlib ``logging`` with a small JSON-lines formatter and a request id.

``configure_logging(level, json_lines)`` sets up the root logger once per process. The request
being served lives in a context variable (``REQUEST``), set per REST request by
``service.rest.middleware.RequestContextMiddleware`` and per gRPC call by ``service.grpc.request_id``;
a filter copies its id onto every log record that has none, so engine lines carry the id of the
request that caused them. The batcher's tasks run outside any request: a batcher ``Request``
records the id at submit, and its lines pass ``request_id`` (one request) or ``request_ids`` (a
batch) explicitly.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

# Attributes every LogRecord has; anything else passed via ``extra=`` goes into the JSON line.
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "color_message"}
MAX_REQUEST_ID_CHARS = 128


@dataclass
class RequestContext:
    """The request being served: its id, and whether an engine call already counted it."""

    request_id: str
    counted: bool = False  # set by the engine once it recorded this request's metrics


REQUEST: ContextVar[RequestContext | None] = ContextVar("clipserve_request", default=None)


def new_request_id(given: str | None = None) -> str:
    """The client's request id when it is usable (printable ASCII, at most 128 chars), else a new one."""
    if given and len(given) <= MAX_REQUEST_ID_CHARS and given.isascii() and given.isprintable():
        return given
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds the current request's ``request_id`` (or ``-``) to each record that does not carry one already."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = REQUEST.get()
        if not hasattr(record, "request_id"):
            record.request_id = ctx.request_id if ctx else "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Route every logger (uvicorn's included) to one stderr handler, JSON lines or text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # clipserve writes its own access line per request (with the request id); uvicorn's is redundant.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
