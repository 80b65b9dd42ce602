"""What the routes add to the OpenAPI document: the error statuses each may answer, and the limits.

``document_settings`` makes an app's ``/openapi.json`` show its settings' limits
(``max_items_per_request``...) instead of their defaults, and its API-key schemes when it has keys,
so the document says what this server accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.config import Settings
from service.rest.deps import document_api_keys
from service.rest.schemas import ErrorResponse, document_limits

RETRY_AFTER = {"description": "Seconds to wait before trying again.", "schema": {"type": "integer", "minimum": 1}}
# Every error status a route may answer, and when (docs/api.md#errors).
ERROR_STATUSES: dict[int, str] = {
    400: "Malformed JSON or multipart body (invalid_argument).",
    401: "API key missing or wrong, when the server has one (unauthenticated).",
    404: "Unknown model or label set (not_found).",
    408: "The body did not arrive within body_timeout_s.",
    413: "Too large (too_large): the body over max_body_bytes, an image over max_image_bytes or "
    "max_image_pixels, labels x templates over max_prompts or max_prompt_chars.",
    422: "Invalid request (invalid_argument): outside this schema, or an image that does not decode.",
    429: "Over capacity (overloaded): items or body bytes in flight, or the model's queue full.",
    499: "The client went away before the answer (cancelled); only logs and metrics see it.",
    500: "The model failed on the batch of this request (internal).",
    503: "Not ready yet, or draining for shutdown (unavailable).",
    504: "The request's deadline, request_timeout_s, passed (timeout).",
}
# What a call to the engine (embed, classify, similarity) may answer.
ENGINE_ERRORS = (400, 401, 404, 408, 413, 422, 429, 499, 500, 503, 504)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses`` for error statuses: the error body, and ``Retry-After`` on 429 (always) and 503."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {"model": ErrorResponse, "description": ERROR_STATUSES[status]}
        if status in (429, 503):
            response["headers"] = {"Retry-After": {**RETRY_AFTER, "required": status == 429}}
        responses[status] = response
    return responses


def document_settings(app: FastAPI, settings: Settings) -> None:
    """Make ``app``'s ``/openapi.json`` say what this server accepts: its configured limits instead of
    their defaults, and its API-key schemes when it has keys."""
    generate = app.openapi
    app.openapi = lambda: document_api_keys(document_limits(generate(), settings), app)  # type: ignore[method-assign]
