"""Every REST error as ``{"error": {"type", "message"}}`` with the right status, never a 500 for bad input.

- ``ClipServeError`` (from the engine): its kind's status; 429 with ``Retry-After``.
- Request validation (pydantic): 422 naming each bad field (``inputs[2].image: invalid base64...``);
  malformed JSON: 400 with the parser's reason and position.
- Starlette HTTP errors: 404 unknown path, 405, 401 bad API key, 413 body over ``max_body_bytes``
  (raised by the body-limit middleware while the body streams in).
- Anything else: 500 with a generic message; the traceback goes to the log.

Under ``/v1/`` (the OpenAI-compatible routes) the same errors have OpenAI's body,
``{"error": {"message", "type", "param", "code"}}``: ``type`` OpenAI's class of error
(``invalid_request_error``...), ``code`` the kind above, ``param`` the field at fault when known.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.errors import ClipServeError
from service.protocol.errors import DEFAULT_RETRY_AFTER_S, HTTP_STATUS, ErrorKind

log = logging.getLogger(__name__)

_TYPE_BY_STATUS: dict[int, str] = {status: kind.value for kind, status in HTTP_STATUS.items()}
_TYPE_BY_STATUS |= {
    400: ErrorKind.INVALID.value, 401: "unauthenticated", 405: "method_not_allowed", 408: ErrorKind.TIMEOUT.value,
}


def error_response(
    status: int, message: str, kind: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every error response has."""
    kind = kind or _TYPE_BY_STATUS.get(status, "error")
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


OPENAI_PREFIX = "/v1/"
_OPENAI_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def openai_error_response(
    status: int, message: str, code: str | None = None, param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in OpenAI's body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = _OPENAI_TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"message": message, "type": kind, "param": param, "code": code or _TYPE_BY_STATUS.get(status, "error")}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _respond(
    request: Request, status: int, message: str, kind: str | None = None,
    headers: dict[str, str] | None = None, param: str | None = None,
) -> JSONResponse:
    """The native error body, or OpenAI's under ``/v1/``."""
    if request.url.path.startswith(OPENAI_PREFIX):
        return openai_error_response(status, message, kind, param, headers)
    return error_response(status, message, kind, headers)


def field_path(loc: Sequence[Any]) -> str:
    """``("body", "inputs", 2, "image")`` -> ``inputs[2].image``."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_message(errors: Sequence[Any]) -> tuple[int, str]:
    """Status and one message for pydantic's errors: each bad field and why (first five)."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        position = first.get("loc", ("body", "?"))[-1]
        reason = first.get("ctx", {}).get("error", "invalid JSON")
        return 400, f"malformed JSON body: {reason} (at character {position})"
    parts = []
    for err in errors[:5]:
        loc = tuple(err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if loc == ("body",) and err.get("type") in ("model_attributes_type", "dict_type", "missing"):
            msg = "request body must be a JSON object (send Content-Type: application/json)"
        parts.append(f"{field_path(loc)}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "; ".join(parts) + more


async def _clipserve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClipServeError)
    headers = None
    retry_after_s = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_RETRY_AFTER_S.get(exc.kind)
    if retry_after_s is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    code = getattr(exc, "code", None) or exc.kind.value  # the OpenAI routes' errors name a code and param
    return _respond(request, exc.http_status, exc.message, code, headers, getattr(exc, "param", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    status, message = validation_message(errors)
    param = field_path(errors[0].get("loc", ())) if errors and status == 422 else None
    return _respond(request, status, message, param=None if param == "body" else param)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return _respond(request, exc.status_code, message, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(request, 500, "internal server error", ErrorKind.INTERNAL.value)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(ClipServeError, _clipserve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
