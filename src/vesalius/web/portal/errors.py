"""Error answers of browser pages: a styled page, never raw JSON.

An API or DICOMweb client keeps FastAPI's JSON (``{"detail": ...}``); a page route (marked
``page`` in the permission table), or any unknown address asked for by a browser, gets the
portal's error page: what happened, in words, and what to do about it. A 403 names the
permission the account lacks.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vesalius.web.guard import identify

log = logging.getLogger(__name__)

# Machine interfaces: their errors stay JSON, whatever the client accepts.
_MACHINE_PREFIXES = ("/api/", "/dicom-web", "/wado", "/static/", "/openapi.json")

TITLES = {
    400: "This request cannot be answered",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    500: "Something went wrong",
    503: "Not available",
}

ADVICE = {
    403: "Ask an administrator for this permission, or go back to the patient list.",
    404: "Check the address, or find the patient from the patient list.",
    500: "The error has been logged. Try again; if it persists, tell your administrator.",
}


def wants_page(request: Request) -> bool:
    """Whether an error of this request is shown as a page (browsers) or JSON (clients)."""
    rule = getattr(request.state, "rule", None)
    if rule is not None:
        return bool(rule.page)
    if request.url.path.startswith(_MACHINE_PREFIXES):
        return False
    return "text/html" in request.headers.get("accept", "")


async def error_page(request: Request, status: int, message: str) -> Response:
    from vesalius.web.portal.routes import page

    if getattr(request.state, "actor", None) is None:
        try:  # the header shows who is logged in, also on an address no route knows
            auth = request.app.state.container.auth
            request.state.actor = await run_in_threadpool(identify, request, auth)
        except Exception:  # an error page must not fail on who is asking
            request.state.actor = None
    response = page(
        request,
        "error.html",
        status=status,
        title=TITLES.get(status, "Error"),
        message=message,
        advice=ADVICE.get(status, ""),
    )
    response.status_code = status
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code >= 400 and wants_page(request):
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"There is no page at {request.url.path}."
        return await error_page(request, exc.status_code, detail)
    return await http_exception_handler(request, exc)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    if wants_page(request):
        return await error_page(request, 500, "The server could not show this page.")
    return JSONResponse({"detail": "internal server error; it has been logged"}, status_code=500)


class UnexpectedErrors:
    """Turns an unexpected exception into a logged 500 answer (a page for browsers).

    Starlette's own handler for ``Exception`` answers and then raises again, and the server
    drops the connection; a browser or a client keeping the connection alive sees a reset
    instead of the page. Here the error ends with its answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:  # too late for an answer of our own
                raise
            response = await _server_error(Request(scope, receive), exc)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Answer errors of pages with the error page (call after the other middleware)."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(UnexpectedErrors)
