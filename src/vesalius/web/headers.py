"""Security headers on every HTTP answer: a Content-Security-Policy, nosniff, a Referrer-Policy.

One policy for the portal, the API and everything else (scripts only from this server, nothing
may frame the pages, so a Delete button cannot be clicked through someone else's page); the
OHIF viewer under ``/viewer/`` gets the relaxations its bundle needs (inline bootstrap scripts,
``eval`` in its codecs, workers from ``blob:``) and may be framed by this server's own pages
only. A header a route set itself is kept.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COMMON = {
    "default-src": "'self'",
    "img-src": "'self' data: blob:",
    "font-src": "'self' data:",
    "connect-src": "'self'",
    "worker-src": "'self' blob:",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
}

PORTAL_POLICY = {
    **_COMMON,
    # wasm-unsafe-eval lets pages compile WebAssembly (image codecs), not run eval().
    "script-src": "'self' 'wasm-unsafe-eval'",
    "style-src": "'self' 'unsafe-inline'",
    "frame-ancestors": "'none'",
}

VIEWER_POLICY = {
    **_COMMON,
    "script-src": "'self' 'unsafe-inline' 'unsafe-eval' 'wasm-unsafe-eval' blob:",
    "style-src": "'self' 'unsafe-inline'",
    "connect-src": "'self' data: blob:",
    "frame-ancestors": "'self'",
}


def _render(policy: dict[str, str]) -> bytes:
    return "; ".join(f"{name} {value}" for name, value in policy.items()).encode("latin-1")


VIEWER_PREFIX = "/viewer"


def policy_for(path: str) -> bytes:
    """The Content-Security-Policy of the answer to *path*."""
    if path == VIEWER_PREFIX or path.startswith(VIEWER_PREFIX + "/"):
        return _VIEWER
    return _PORTAL


_PORTAL = _render(PORTAL_POLICY)
_VIEWER = _render(VIEWER_POLICY)

_FIXED = (
    (b"x-content-type-options", b"nosniff"),
    # URLs carry study UIDs and patient IDs: never sent to another site.
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response (errors and redirects included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        csp = policy_for(path)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", csp))
                headers += [(n, v) for n, v in _FIXED if n not in present]
                if b"x-frame-options" not in present:
                    headers.append(
                        (b"x-frame-options", b"SAMEORIGIN" if csp is _VIEWER else b"DENY")
                    )
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
