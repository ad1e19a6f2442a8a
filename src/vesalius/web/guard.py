"""Authentication and authorisation of every HTTP route, in one place, and its audit trail.

:func:`authorize` is an application-wide dependency: FastAPI runs it before every route of the
app and of every included router (DICOMweb, records, portal, ...), so no router needs to know
about it. It looks up the route's *path template* in the permission table
(:mod:`vesalius.auth.permissions`), identifies the caller (session cookie, or an API token as a
Bearer or Basic credential), refuses with 401/403 (or sends a browser to the login page), and
checks the CSRF token of state-changing requests made with a session cookie.

:class:`AuditMiddleware` writes the audit event of each audited route once its response has
been sent, with the status it ended with.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vesalius.auth import tokens
from vesalius.auth.accounts import Auth, Client
from vesalius.auth.audit import AuditLog, AuditRecord
from vesalius.auth.permissions import Permission, Rule, role_may, rule_for
from vesalius.index.people import SessionRecord, UserRecord

SESSION_COOKIE = "vesalius_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True)
class Actor:
    """Who is making a request: the account, and its session when it came with a cookie."""

    user: UserRecord
    session: SessionRecord | None = None
    cookie: str | None = None

    def may(self, permission: Permission) -> bool:
        return role_may(self.user.role, permission)

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token if self.session else ""


def route_template(scope: Scope) -> str | None:
    """The path template of the matched route, prefixes included (``/api/x/{id}``)."""
    context = (scope.get("fastapi") or {}).get("effective_route_context")
    if context is not None and getattr(context, "path_format", None):
        return str(context.path_format)
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template is not None else None


def client_of(request: Request) -> Client:
    address = request.client.host if request.client else "-"
    return Client(address, request.headers.get("user-agent"))


def actor_of(request: Request) -> Actor:
    """The actor :func:`authorize` identified (routes that need a login only)."""
    actor: Actor = request.state.actor
    return actor


def identify(request: Request, auth: Auth) -> Actor | None:
    """The caller of *request*, or ``None``.

    An ``Authorization`` header wins over the cookie and must be right: a wrong token is not
    rescued by a session.
    """
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        user: UserRecord | None = None
        if scheme.lower() == "bearer":
            user = auth.token_user(value)
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            username, _, secret = decoded.partition(":")
            user = auth.token_user(secret, username or None)
        return Actor(user) if user is not None else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        session = auth.session(cookie)
        if session is not None:
            return Actor(session.user, session, cookie)
    return None


def login_url(request: Request) -> str:
    root = request.scope.get("root_path", "")
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{root}/login?next={quote(here, safe='/')}"


async def authorize(request: Request) -> None:
    """The application-wide dependency: let the request through or refuse it."""
    template = route_template(request.scope)
    rule = rule_for(request.method, template) if template else None
    request.state.rule = rule
    if rule is None:
        raise HTTPException(403, "this route is not in the permission table; nobody may use it")
    if rule.permission is Permission.PUBLIC:
        return
    if rule.permission is Permission.FEDERATION_PUSH:
        await run_in_threadpool(authorize_site, request)
        return
    auth: Auth = request.app.state.container.auth
    actor = await run_in_threadpool(identify, request, auth)
    if actor is None:
        if rule.page and request.method in SAFE_METHODS:
            raise HTTPException(303, "log in first", headers={"Location": login_url(request)})
        raise HTTPException(
            401,
            "authentication required: log in, or send an API token as a Bearer credential "
            "(or as the password of HTTP Basic)",
            headers={"WWW-Authenticate": 'Bearer realm="Vesalius"'},
        )
    request.state.actor = actor
    if not actor.may(rule.permission):
        raise HTTPException(
            403, f"the role {actor.user.role} does not have the permission {rule.permission}"
        )
    if actor.session is not None and request.method not in SAFE_METHODS:
        await check_csrf(request, actor.session)


def authorize_site(request: Request) -> None:
    """A push to the central index: a site key as Bearer credential sets ``state.site``.

    Without an ``Authorization`` header the route may still find the key in the body (a
    seed-004 client posts ``{"key": ...}`` with its record) through :func:`site_for_key`.
    A user's API token is refused with 403: pushes are made with site keys only.
    """
    request.state.site = None
    header = request.headers.get("authorization")
    if not header:
        return
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        site = site_for_key(request, value)
        if site is not None:
            request.state.site = site
            return
        if request.app.state.container.auth.token_user(value.strip()) is not None:
            raise HTTPException(
                403,
                f"the permission {Permission.FEDERATION_PUSH} belongs to sites: push with a "
                "site key (`vesalius central site add CODE` on the central index), not a "
                "user's token",
            )
    raise HTTPException(
        401,
        "a valid site key is required: send it as `Authorization: Bearer <key>` (unknown "
        "and revoked keys are refused)",
        headers={"WWW-Authenticate": 'Bearer realm="Vesalius federation"'},
    )


def site_for_key(request: Request, key: str) -> Any:
    """The live site a key belongs to, or ``None``."""
    return request.app.state.container.central.site_for_key(key)


async def check_csrf(request: Request, session: SessionRecord) -> None:
    """A cookie-authenticated change must come from our own pages: same origin, right token."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise HTTPException(403, "cross-site request refused (Origin does not match Host)")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not tokens.same(sent, session.csrf_token):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page and try again")


def secure_cookies(request: Request) -> bool:
    settings = request.app.state.container.settings
    if settings.secure_cookies is not None:
        return bool(settings.secure_cookies)
    public = settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def _protocol(path: str) -> str:
    return "dicomweb" if path.startswith(("/dicom-web", "/wado")) else "http"


class AuditMiddleware:
    """Writes the audit event of an audited route after its response, with its status."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            rule: Rule | None = state.get("rule")
            actor: Actor | None = state.get("actor")
            audited = rule is not None and (rule.action is not None or status == 403)
            if not recorded and audited and actor is not None:
                assert rule is not None
                self._record(scope, rule, actor, status)
            recorded = True

        async def send_status(message: Message) -> None:
            # Recorded as the answer starts: the request is decided, and a client that reads
            # the trail right after its answer finds the event.
            if message["type"] == "http.response.start":
                record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            record(500)

    def _record(self, scope: Scope, rule: Rule, actor: Actor, status: int) -> None:
        path = scope.get("path", "")
        query = scope.get("query_string", b"").decode("latin-1")
        headers = dict(scope.get("headers") or [])
        client = scope.get("client")
        params = scope.get("path_params") or {}
        self.audit.record(
            AuditRecord(
                actor=actor.user.username,
                action=rule.action or "denied",
                protocol=_protocol(path),
                object=f"{scope.get('method')} {path}" + (f"?{query}" if query else ""),
                study_uid=params.get("study"),
                outcome="ok" if status < 400 else str(status),
                address=client[0] if client else None,
                user_agent=headers.get(b"user-agent", b"").decode("latin-1") or None,
            )
        )
