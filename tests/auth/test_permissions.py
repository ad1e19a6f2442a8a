"""The permission table covers every route, and every route refuses who may not use it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from authhelp import bearer, concrete, make_user, routes
from dicomweb.conftest import RunningWeb, serve
from vesalius.auth.permissions import Permission, Role, rule_for
from vesalius.container import Container


@pytest.fixture
def web(sqlite_container: Container) -> Iterator[RunningWeb]:
    yield from serve(sqlite_container)


def test_every_route_is_in_the_permission_table(sqlite_container: Container) -> None:
    found = routes(sqlite_container)
    assert len(found) > 60
    missing = [(m, t) for m, t in found if rule_for(m, t) is None]
    assert missing == []


def test_roles_differ_as_documented() -> None:
    assert Role.ADMIN.may(Permission.IMAGES_DELETE)
    assert not Role.RADIOLOGIST.may(Permission.IMAGES_DELETE)
    assert Role.RADIOLOGIST.may(Permission.IMAGES_STORE)
    assert not Role.REFERRING_DOCTOR.may(Permission.RECORDS_READ)
    assert not Role.REFERRING_DOCTOR.may(Permission.IMAGES_DOWNLOAD)
    assert Role.RESEARCHER.may(Permission.RECORDS_WRITE)
    assert not Role.RESEARCHER.may(Permission.USERS_MANAGE)
    for role in Role:
        assert role.may(Permission.IMAGES_READ) and role.may(Permission.WORKLIST_READ)


def test_every_route_refuses_anonymous_and_unprivileged_callers(web: RunningWeb) -> None:
    """No credentials: 401 (or the login page for browser pages). A role without the route's
    permission: 403. Never data."""
    base = re.sub(r"//[^@/]*@", "//", web.url)
    tokens = {role: make_user(web.container, f"u-{role.value}", role.value) for role in Role}
    checked = 0
    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as client:
        for method, template in routes(web.container):
            rule = rule_for(method, template)
            assert rule is not None
            if rule.permission is Permission.PUBLIC:
                continue
            path = concrete(template)
            anonymous = client.request(method, path)
            expected = {303} if rule.page and method == "GET" else {401}
            assert anonymous.status_code in expected, (method, template, anonymous.text[:200])
            if rule.page and method == "GET":
                assert anonymous.headers["location"].startswith("/login?next=")
            wrong = client.request(method, path, headers=bearer("ves_" + "x" * 43))
            assert wrong.status_code in expected | {401}, (method, template)
            for role in Role:
                if not role.may(rule.permission):
                    refused = client.request(method, path, headers=bearer(tokens[role]))
                    assert refused.status_code == 403, (role, method, template, refused.text[:200])
                    if rule.page:  # a page answers with the portal's error page
                        assert refused.headers["content-type"].startswith("text/html")
                        assert f"permission {rule.permission}" in refused.text
                    else:
                        assert "permission" in refused.json()["detail"]
            checked += 1
    assert checked > 50


def test_public_routes_are_few(web: RunningWeb) -> None:
    public = {
        (m, t)
        for m, t in routes(web.container)
        if (rule := rule_for(m, t)) and rule.permission is Permission.PUBLIC
    }
    # The capabilities transaction (OPTIONS under /dicom-web) describes routes, not patients.
    capabilities = {(m, t) for m, t in public if m == "OPTIONS"}
    assert capabilities and all(t.startswith("/dicom-web") for _, t in capabilities)
    assert public - capabilities == {
        ("GET", "/login"),
        ("POST", "/login"),
        ("GET", "/api/system"),
        ("GET", "/api/conformance"),
    }
