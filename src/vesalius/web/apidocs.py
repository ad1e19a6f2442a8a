"""The API's own documentation: ``/docs`` (Swagger UI), ``/redoc`` and ``/openapi.json``.

FastAPI's built-in pages are public and load their scripts from a CDN; these are ordinary
routes, so the permission table guards them (a login or an API token), and their scripts come
from the installed ``fastapi-offline`` package, so the page works on a hospital network without
internet. The pages start their viewers from files (no inline script), within the strict
Content-Security-Policy of :mod:`vesalius.web.headers`.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from vesalius.web.guard import actor_of

VENDOR = Path(fastapi_offline.__file__).parent / "static"
OWN = Path(__file__).parent / "apidocs_static"
ASSETS = "/static/apidocs"

router = APIRouter(include_in_schema=False)


def mount_assets(app: FastAPI) -> None:
    """Serve the pages' scripts; call before the portal's ``/static`` mount."""
    app.mount(f"{ASSETS}/vendor", StaticFiles(directory=VENDOR), name="apidocs-vendor")
    app.mount(ASSETS, StaticFiles(directory=OWN), name="apidocs")


def _page(request: Request, title: str, head: str, body: str) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    csrf = actor_of(request).csrf_token
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{escape(csrf)}">
<title>{escape(title)}</title>
<link rel="icon" href="{root}/static/vesalius.svg">
{head.format(root=root, assets=root + ASSETS)}
</head>
<body>
{body.format(root=root, assets=root + ASSETS)}
</body>
</html>
"""
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    """The OpenAPI description of every route."""
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return _page(
        request,
        "Vesalius API",
        '<link rel="stylesheet" href="{assets}/vendor/swagger-ui.css">',
        '<div id="swagger-ui" data-openapi="{root}/openapi.json"></div>\n'
        '<script src="{assets}/vendor/swagger-ui-bundle.js"></script>\n'
        '<script src="{assets}/swagger-init.js"></script>',
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return _page(
        request,
        "Vesalius API reference",
        "",
        '<div id="redoc" data-openapi="{root}/openapi.json"></div>\n'
        '<script src="{assets}/vendor/redoc.standalone.js"></script>\n'
        '<script src="{assets}/redoc-init.js"></script>',
    )
