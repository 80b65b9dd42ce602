"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) that work with no network.

FastAPI's own pages load their JavaScript, CSS and favicon from a CDN, so offline they render blank.
These pages load them from the server: the files ship in the ``fastapi-offline`` package (Swagger UI's
``swagger-ui-bundle.js`` and ``swagger-ui.css``, ReDoc's ``redoc.standalone.js``, a favicon), and
``assets()`` serves its folder at ``ASSETS_URL``. The app turns FastAPI's pages off
(``docs_url=None, redoc_url=None``), mounts ``assets()`` and includes ``router``. No page names
another host: Swagger UI's validator badge (which would call out) is off, ReDoc loads no Google fonts.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/static/docs"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# Swagger UI posts the document to an online validator for its badge unless validatorUrl is null.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"validatorUrl": None}
# The pages load scripts, styles, images and fonts from this server only: ReDoc's sidebar always shows
# a logo from its vendor's CDN (hidden when it fails to load); the browser does not even ask for it.
# Requests the reader makes (Swagger UI's "Try it out") are left alone: no connect-src.
CONTENT_SECURITY_POLICY = (
    "script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'self'"
)

router = APIRouter(include_in_schema=False)


def assets_folder() -> Path:
    """The folder holding the Swagger UI and ReDoc files (installed with ``fastapi-offline``)."""
    folder = Path(str(files("fastapi_offline") / "static"))
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline's {folder} lacks {', '.join(missing)}: reinstall clipserve[server]")
    return folder


def assets() -> StaticFiles:
    """The ASGI app serving the docs pages' files; mount it at ``ASSETS_URL``."""
    return StaticFiles(directory=assets_folder())


def _root(request: Request) -> str:
    """The prefix of this app's URLs (``root_path``, behind a proxy that mounts it under a path)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the app's OpenAPI document, its files served by this server."""
    app: FastAPI = request.app
    root = _root(request)
    return _local_only(get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        swagger_ui_parameters={**SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})},
    ))


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """The page Swagger UI's OAuth2 flows return to (FastAPI serves it beside its own ``/docs``)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the app's OpenAPI document, its script served by this server, no Google fonts."""
    app: FastAPI = request.app
    root = _root(request)
    return _local_only(get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    ))
