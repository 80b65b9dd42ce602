"""The web playground at ``/`` and CORS for browser clients on other origins (both settings).

The playground is three static files shipped in the package (``service/rest/playground``): plain
JavaScript, no build step, nothing from another host. The page calls the public REST API only
(``/models``, ``/classify``, ``/similarity``, ``/openapi.json`` for the built-in label sets) with
URLs relative to itself, so it also works under a proxy's path prefix (``root_path``). Its
Content-Security-Policy lets it load and call this server only.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from service.config import Settings
from service.protocol.headers import API_KEY_HEADER, AUTHORIZATION_HEADER, REQUEST_ID_HEADER, RETRY_AFTER_KEY

PAGE_URL = "/"
ASSETS_URL = "/static/playground"
FILES = ("index.html", "app.js", "style.css")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "base-uri 'self'; form-action 'none'; frame-ancestors 'self'"
)
# What a browser on an allowed origin may send and read (the API key, the request id, Retry-After on 429/503).
CORS_REQUEST_HEADERS = ("content-type", API_KEY_HEADER, AUTHORIZATION_HEADER, REQUEST_ID_HEADER)
CORS_EXPOSED_HEADERS = (REQUEST_ID_HEADER, RETRY_AFTER_KEY)
CORS_MAX_AGE_S = 600

router = APIRouter(include_in_schema=False)


def folder() -> Path:
    """The folder of the playground's files (package data)."""
    path = Path(str(files("service.rest") / "playground"))
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise RuntimeError(f"{path} lacks {', '.join(missing)}: reinstall clipserve")
    return path


@router.get(PAGE_URL)
async def page() -> FileResponse:
    """The playground's page."""
    return FileResponse(
        folder() / "index.html", media_type="text/html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


def install(app: FastAPI, settings: Settings) -> None:
    """The playground (unless ``playground`` is off) and CORS (when ``cors_origins`` names any).

    Call after the other middleware: CORS is then the outermost, so errors answered by the inner
    layers (413, 429) carry its headers too, and a browser can read them.
    """
    if settings.playground:
        app.include_router(router)
        app.mount(ASSETS_URL, StaticFiles(directory=folder()), name="playground-assets")
    origins = settings.cors_origin_list()
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
            allow_headers=list(CORS_REQUEST_HEADERS), expose_headers=list(CORS_EXPOSED_HEADERS),
            max_age=CORS_MAX_AGE_S,
        )
