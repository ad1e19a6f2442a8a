"""Security headers on every answer, the public/non-public split, and the API page offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authhelp import PASSWORD, bearer, concrete, make_user, routes
from dicomweb.conftest import RunningWeb, serve
from vesalius.auth.permissions import Permission, rule_for
from vesalius.container import Container
from vesalius.web.app import create_app


@pytest.fixture
def web(sqlite_container: Container) -> Iterator[RunningWeb]:
    yield from serve(sqlite_container)


def base_of(web: RunningWeb) -> str:
    return re.sub(r"//[^@/]*@", "//", web.url)


def directives(response: httpx.Response) -> dict[str, str]:
    csp = response.headers.get("content-security-policy", "")
    return dict(part.strip().split(" ", 1) for part in csp.split(";") if part.strip())


def assert_secure(response: httpx.Response, where: object) -> None:
    policy = directives(response)
    assert policy.get("default-src") == "'self'", where
    assert policy.get("object-src") == "'none'", where
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") == "same-origin", where
    path = response.request.url.path
    if path == "/viewer" or path.startswith("/viewer/"):
        assert policy["frame-ancestors"] == "'self'", where
    else:
        # Nothing may frame the portal (its Delete button included), and scripts come only
        # from this server: no inline script, no eval.
        assert policy["frame-ancestors"] == "'none'", where
        assert response.headers.get("x-frame-options") == "DENY", where
        assert "unsafe-inline" not in policy["script-src"], where
        assert "'unsafe-eval'" not in policy["script-src"], where


def test_every_route_answers_with_the_headers_and_only_public_ones_without_login(
    web: RunningWeb,
) -> None:
    admin = bearer(make_user(web.container, "head-admin", "admin"))
    checked = 0
    with httpx.Client(base_url=base_of(web), timeout=30, follow_redirects=False) as client:
        for method, template in routes(web.container):
            rule = rule_for(method, template)
            assert rule is not None
            path = concrete(template)
            anonymous = client.request(method, path)
            assert_secure(anonymous, (method, template, "anonymous"))
            refused = anonymous.status_code in (401, 303)
            if rule.permission is Permission.PUBLIC:
                assert not refused, (method, template)
            else:
                assert refused, (method, template, anonymous.status_code)
            if method in ("GET", "HEAD"):  # no changes made by this test
                assert_secure(client.request(method, path, headers=admin), (method, template))
            checked += 1
        # Files, the viewer, unknown paths and the login page's own answers too.
        for path in ("/static/portal.css", "/static/apidocs/vendor/swagger-ui.css", "/nowhere"):
            assert_secure(client.get(path), path)
        assert_secure(client.get("/viewer/", headers=admin), "/viewer/")
        assert_secure(client.post("/login", data={"username": "x", "password": "y"}), "login")
    assert checked > 60


def test_the_public_routes_are_the_login_page_and_the_system_summary(web: RunningWeb) -> None:
    with httpx.Client(base_url=base_of(web), timeout=30, follow_redirects=False) as client:
        for path in ("/docs", "/redoc"):
            answer = client.get(path)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/api/system").status_code == 200
        assert client.get("/login").status_code == 200


def test_unexpected_errors_carry_the_headers_too(sqlite_container: Container) -> None:
    from starlette.routing import Route

    def boom(request: Any) -> None:
        raise RuntimeError("boom")

    app = create_app(sqlite_container)
    app.router.routes.insert(0, Route("/boom", boom))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    import asyncio

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom")

    answer = asyncio.run(get())
    assert answer.status_code == 500
    assert_secure(answer, "/boom")


def test_api_pages_are_served_offline_from_the_package(web: RunningWeb) -> None:
    admin = bearer(make_user(web.container, "docs-admin", "admin"))
    with httpx.Client(base_url=base_of(web), timeout=30, headers=admin) as client:
        schema = client.get("/openapi.json")
        assert schema.status_code == 200
        assert "/dicom-web/studies" in schema.json()["paths"]
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200
            sources = re.findall(r'(?:src|href)="([^"]+)"', html.text)
            assert sources and all(s.startswith("/") for s in sources), sources
            assert "<script>" not in html.text  # no inline script: the CSP allows none
            for source in sources:
                asset = client.get(source)
                assert asset.status_code == 200, source
                assert len(asset.content) > 100, source


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="install Debian's chromium (make install-test)")
def test_api_pages_render_in_chromium_under_the_policy(web: RunningWeb) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    base = base_of(web)
    web.container.auth.create_user("reader", PASSWORD, "referring_doctor")
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            # Any request leaving this server would fail on a hospital network: refuse them.
            outside: list[str] = []

            def guard(route: Any) -> None:
                if route.request.url.startswith(base):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            page.goto(f"{base}/docs")
            page.fill("input[name=username]", "reader")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/docs$"))
            page.locator(".opblock-summary-path").first.wait_for(timeout=30_000)
            assert page.locator(".opblock").count() > 50
            page.goto(f"{base}/redoc")
            page.locator("h2", has_text="Search for studies").first.wait_for(timeout=30_000)
        finally:
            browser.close()
    assert outside == []
    # ReDoc always shows a "by Redocly" logo from its CDN; the policy blocks it (no request
    # leaves this server) and ReDoc hides the broken image. Nothing else may be refused.
    assert [e for e in errors if "cdn.redoc.ly/redoc/logo-mini.svg" not in e] == []
