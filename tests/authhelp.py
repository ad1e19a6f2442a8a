"""Credentials for tests that talk to the HTTP app: accounts and API tokens made in the container.

Every HTTP route needs a login or an API token. Tests get one the way a DICOMweb client
would: an API token, sent as a Bearer header or as the password of HTTP Basic (which also
works embedded in a URL, ``http://user:token@host``, for clients built from a URL alone).
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

from vesalius.container import Container

PASSWORD = "Test-password-0042"


def make_user(container: Container, username: str = "tester", role: str = "admin") -> str:
    """Create *username* with *role* (once) and return a fresh API token for it."""
    auth = container.auth
    if username not in {u.username for u in auth.users()}:
        auth.create_user(username, PASSWORD, role)
    secret, _record = auth.create_token(username, "tests")
    return secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(username: str, token: str) -> dict[str, str]:
    value = base64.b64encode(f"{username}:{token}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def admin_headers(container: Container, username: str = "tester") -> dict[str, str]:
    """Bearer headers of an administrator (every permission)."""
    return bearer(make_user(container, username, "admin"))


def url_with_credentials(url: str, container: Container, username: str = "tester") -> str:
    """``http://host:port`` as ``http://tester:<token>@host:port`` (HTTP Basic from the URL)."""
    token = make_user(container, username, "admin")
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(username)}:{quote(token, safe='')}@{rest}"


def routes(container: Container) -> list[tuple[str, str]]:
    """(method, path template) of every route of the application."""
    from vesalius.web.app import create_app

    app = create_app(container)
    try:
        from fastapi.routing import iter_route_contexts

        contexts = list(iter_route_contexts(app.routes))
    except ImportError:  # older FastAPI: included routes are flattened already
        contexts = list(app.routes)  # type: ignore[arg-type]
    found = []
    for route in contexts:
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        for method in sorted(getattr(route, "methods", None) or []):
            if template and method != "HEAD":
                found.append((method, template))
    return found


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "1.2.3", template)
