"""FastAPI dependencies: the engine and settings of the running app, and the optional API key.

All are ``async def``: FastAPI runs plain ``def`` dependencies in its thread pool, a thread hop per
dependency per request (measured: most of the REST overhead on a loaded 2-core machine).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from service.config import Settings
from service.engine import Engine
from service.protocol.headers import API_KEY_HEADER


async def get_engine(request: Request) -> Engine:
    """The engine the lifespan started."""
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER, include_in_schema=False)] = None,
) -> None:
    """When ``settings.api_key`` is set, the request must carry it in ``X-API-Key`` (else 401)."""
    if settings.api_key is None:
        return
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), settings.api_key.encode()):
        raise HTTPException(401, f"missing or wrong API key (header {API_KEY_HEADER})")


EngineDep = Annotated[Engine, Depends(get_engine)]
