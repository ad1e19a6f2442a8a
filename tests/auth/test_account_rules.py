"""Account rules: least privilege by default, an administrator always left, scripts can add users."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from authhelp import PASSWORD, bearer, make_user
from dicomweb.conftest import RunningWeb, serve
from vesalius.auth.accounts import Client
from vesalius.auth.permissions import DEFAULT_ROLE, ROLE_PERMISSIONS, Role
from vesalius.config import Settings
from vesalius.container import Container, build
from vesalius.errors import Conflict


@pytest.fixture
def web(sqlite_container: Container) -> Iterator[RunningWeb]:
    yield from serve(sqlite_container)


def test_the_default_role_is_the_least_privileged() -> None:
    fewest = min(len(p) for p in ROLE_PERMISSIONS.values())
    assert len(ROLE_PERMISSIONS[DEFAULT_ROLE]) == fewest
    assert DEFAULT_ROLE is not Role.ADMIN


def test_the_last_active_administrator_stays(container: Container) -> None:
    auth = container.auth
    auth.create_user("root", PASSWORD, "admin")
    auth.create_user("viewer", PASSWORD, "referring_doctor")
    for change in (
        lambda: auth.set_active("root", False),
        lambda: auth.set_role("root", "researcher"),
    ):
        with pytest.raises(Conflict, match="last active administrator"):
            change()
    assert auth.user("root").role == "admin" and auth.user("root").active
    # A disabled administrator does not count.
    auth.create_user("second", PASSWORD, "admin")
    auth.set_active("second", False)
    with pytest.raises(Conflict):
        auth.set_role("root", "radiologist")
    # With another active administrator, either may go; then the other is the last.
    auth.set_active("second", True)
    auth.set_role("root", "radiologist")
    with pytest.raises(Conflict):
        auth.set_active("second", False)
    # Other accounts change freely, and an administrator may be re-enabled or kept admin.
    auth.set_active("viewer", False)
    auth.set_role("second", "admin")
    auth.set_active("second", True)


def test_api_defaults_and_refuses_removing_the_last_admin(web: RunningWeb) -> None:
    base = re.sub(r"//[^@/]*@", "//", web.url)
    admin = bearer(make_user(web.container, "boss", "admin"))
    auth = web.container.auth
    for other in auth.users():  # boss alone is an administrator
        if other.role == "admin" and other.username != "boss":
            auth.set_role(other.username, "radiologist")
    with httpx.Client(base_url=base, timeout=30, headers=admin) as client:
        made = client.post("/api/users", json={"username": "newbie", "password": PASSWORD})
        assert made.status_code in (200, 201), made.text
        assert made.json()["role"] == DEFAULT_ROLE.value
        for patch in ({"active": False}, {"role": "researcher"}):
            refused = client.patch("/api/users/boss", json=patch)
            assert refused.status_code == 409, refused.text
            assert "last active administrator" in refused.json()["detail"]
        assert web.container.auth.user("boss").role == "admin"
        bad = client.post(
            "/api/users", json={"username": "x2", "password": PASSWORD, "role": "god"}
        )
        assert bad.status_code == 422


def vesalius(args: list[str], data: Path, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "vesalius", *args],
        env={**os.environ, "VESALIUS_DATA_DIR": str(data), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def logs_in(data: Path, username: str, password: str) -> bool:
    container = build(Settings(data_dir=data), migrate=True)
    try:
        container.auth.login(username, password, Client("127.0.0.1", "test"))
        return True
    finally:
        container.close()


def test_user_add_without_a_terminal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    piped = vesalius(["user", "add", "alice", "--password-stdin"], data, input=PASSWORD + "\n")
    assert piped.returncode == 0, piped.stderr
    assert "Warning" not in piped.stderr and "echo" not in piped.stderr.lower()
    assert "alice (referring_doctor)" in piped.stderr
    assert logs_in(data, "alice", PASSWORD)
    # No terminal and no password given: one is generated and printed once, alone on stdout.
    generated = vesalius(
        ["user", "add", "bob", "--role", "researcher"], data, stdin=subprocess.DEVNULL
    )
    assert generated.returncode == 0, generated.stderr
    password = generated.stdout.strip()
    assert len(password) >= 20 and "\n" not in password
    assert "shown this once" in generated.stderr
    assert logs_in(data, "bob", password)
    # An empty line on --password-stdin is a mistake, not an empty password.
    empty = vesalius(["user", "add", "carol", "--password-stdin"], data, input="\n")
    assert empty.returncode == 1 and "no password line" in empty.stderr
    weak = vesalius(["user", "add", "dave", "--password-stdin"], data, input="short\n")
    assert weak.returncode == 1 and weak.stderr.strip()
    listed = vesalius(["user", "list"], data)
    assert "carol" not in listed.stdout and "dave" not in listed.stdout


def test_cli_keeps_the_last_admin(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = vesalius(
        ["user", "add", "root", "--role", "admin", "--password-stdin"], data, input=PASSWORD
    )
    assert added.returncode == 0, added.stderr
    refused = vesalius(["user", "disable", "root"], data)
    assert refused.returncode == 1
    assert "last active administrator" in refused.stderr
    assert "Traceback" not in refused.stderr
    help_text = vesalius(["user", "add", "--help"], data).stdout
    assert "--password-stdin" in help_text and "--generate-password" in help_text
