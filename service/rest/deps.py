"""FastAPI dependencies: the engine and settings of the running app, and the optional API keys.

All are ``async def``: FastAPI runs plain ``def`` dependencies in its thread pool, a thread hop per
dependency per request (measured: most of the REST overhead on a loaded 2-core machine).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.security import APIKeyHeader, HTTPBearer

from service.auth import DENIED, ApiKeys
from service.config import Settings
from service.engine import Engine


async def get_engine(request: Request) -> Engine:
    """The engine the lifespan started."""
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


# The two ways to send a key, as FastAPI security schemes (auto_error=False: the check below answers a
# missing key itself, with one message). They parse the headers, and ``document_api_keys`` puts them
# in the OpenAPI document of a server that has keys (Swagger's "Authorize" and "Try it out").
api_key_header = APIKeyHeader(
    name="X-API-Key", scheme_name="ApiKeyHeader", auto_error=False,
    description="One of the server's API keys (api_key, api_keys, api_key_file).",
)
bearer = HTTPBearer(
    scheme_name="BearerKey", auto_error=False, description="The same API key as `Authorization: Bearer <key>`.",
)
SCHEMES = (api_key_header, bearer)


def app_api_keys(app: FastAPI) -> ApiKeys:
    """The app's accepted API keys, read from its settings once (the key file included)."""
    keys: ApiKeys | None = getattr(app.state, "api_keys", None)
    if keys is None:
        settings: Settings = app.state.settings
        keys = app.state.api_keys = settings.api_key_set()
    return keys


async def require_api_key(request: Request) -> None:
    """When the server has API keys, the request must carry one: ``X-API-Key`` or ``Authorization: Bearer``.

    A missing, malformed or wrong key is 401 with one message, whichever keys exist.
    """
    keys = app_api_keys(request.app)
    if not keys:
        return
    credentials = await bearer(request)
    token = credentials.credentials if credentials is not None else None
    if not keys.accepts(await api_key_header(request), token):
        raise HTTPException(401, DENIED, headers={"WWW-Authenticate": "Bearer"})


def document_api_keys(openapi: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """``openapi`` with the key schemes declared, when ``app`` has API keys, on each operation that needs one.

    An operation needs one when it documents a 401 (the routes that depend on ``require_api_key``). A
    server without keys declares none: a declared scheme would tell clients they must send a key.
    """
    if not app_api_keys(app):
        return openapi
    schemes = openapi.setdefault("components", {}).setdefault("securitySchemes", {})
    for scheme in SCHEMES:
        schemes[scheme.scheme_name] = jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
    # One requirement per scheme: either will do.
    either: list[dict[str, list[str]]] = [{scheme.scheme_name: []} for scheme in SCHEMES]
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "401" in operation.get("responses", {}):
                operation["security"] = either
    return openapi


EngineDep = Annotated[Engine, Depends(get_engine)]
