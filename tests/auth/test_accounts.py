"""Accounts, logins, sessions, tokens, CSRF and the audit trail, over the real HTTP server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest

from authhelp import PASSWORD, bearer, make_user
from dicomgen import make_file
from dicomweb.conftest import RunningWeb, serve
from vesalius.auth.accounts import Client, LoginRefused
from vesalius.auth.audit import utcnow
from vesalius.auth.passwords import PasswordPolicyError
from vesalius.container import Container
from vesalius.index.migrate import head_revision
from vesalius.index.people import AuditFilters


@pytest.fixture
def web(sqlite_container: Container) -> Iterator[RunningWeb]:
    yield from serve(sqlite_container)


def base(web: RunningWeb) -> str:
    return re.sub(r"//[^@/]*@", "//", web.url)


def login(client: httpx.Client, username: str, password: str, **extra: str) -> httpx.Response:
    return client.post("/login", data={"username": username, "password": password, **extra})


def csrf(client: httpx.Client) -> str:
    page = client.get("/account").text
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found
    return found.group(1)


def test_people_and_audit_migrate_on_every_database(container: Container) -> None:
    assert head_revision() >= "0003"  # later migrations build on it
    user = container.auth.create_user("dr.who", PASSWORD, "radiologist", "Dr Who")
    assert user.role == "radiologist"
    token, session = container.auth.login("dr.who", PASSWORD, Client("10.0.0.1", "ua"))
    assert container.auth.session(token) is not None and session.user.username == "dr.who"
    container.audit.flush()
    assert [e["action"] for e in container.audit.search(AuditFilters(actor="dr.who"))] == ["login"]


def test_first_admin_and_password_policy(sqlite_container: Container) -> None:
    auth = sqlite_container.auth
    generated = auth.ensure_admin(None)
    assert generated and len(generated) >= 20
    assert auth.ensure_admin(None) is None  # only once
    for bad in ("short", "aaaaaaaaaaaa", "1234567890", "xxbob-long-password"):
        with pytest.raises(PasswordPolicyError):
            auth.create_user("bob", bad, "researcher")
    with pytest.raises(ValueError):
        auth.create_user("bob", PASSWORD, "superuser")


def test_login_logout_and_session_cookie(web: RunningWeb) -> None:
    web.container.auth.create_user("rad", PASSWORD, "radiologist")
    with httpx.Client(base_url=base(web), follow_redirects=False) as client:
        assert client.get("/worklist").status_code == 303
        refused = login(client, "rad", "wrong password!")
        assert refused.status_code == 401 and "wrong user name or password" in refused.text
        ok = login(client, "rad", PASSWORD, next="/worklist")
        assert ok.status_code == 303 and ok.headers["location"] == "/worklist"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
        assert client.get("/worklist").status_code == 200
        # an open redirect after login is refused
        assert (
            login(client, "rad", PASSWORD, next="//evil.example/").headers["location"]
            == "/worklist"
        )
        token = csrf(client)
        assert client.post("/logout").status_code == 403  # no CSRF token
        assert client.post("/logout", data={"csrf_token": token}).status_code == 303
        assert client.get("/api/worklist").status_code == 401
    web.container.audit.flush()
    actions = [e["action"] for e in web.container.audit.search(AuditFilters(actor="rad"))]
    assert {"login", "login_failed", "logout", "denied"} <= set(actions)


def test_secure_cookie_behind_https(make_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vesalius.container import build

    container = build(make_settings(public_url="https://pacs.example"), migrate=True)
    try:
        container.auth.create_user("rad", PASSWORD, "radiologist")
        for running in serve(container):
            with httpx.Client(base_url=base(running), follow_redirects=False) as client:
                assert "secure" in login(client, "rad", PASSWORD).headers["set-cookie"].lower()
    finally:
        container.close()


def test_failed_logins_lock_the_account_then_the_address(sqlite_container: Container) -> None:
    auth, settings = sqlite_container.auth, sqlite_container.settings
    auth.create_user("alice", PASSWORD, "researcher")
    here = Client("192.0.2.7")
    for _ in range(settings.login_max_failures_per_account):
        with pytest.raises(LoginRefused, match="wrong"):
            auth.login("alice", "not the password", here)
    with pytest.raises(LoginRefused, match="too many"):
        auth.login("alice", PASSWORD, here)  # even the right password, for a while
    # per address: many accounts tried from one address
    for n in range(settings.login_max_failures_per_address):
        with pytest.raises(LoginRefused):
            auth.login(f"nobody{n}", "guess-guess-1", Client("198.51.100.1"))
    auth.create_user("carol", PASSWORD, "researcher")
    with pytest.raises(LoginRefused, match="too many"):
        auth.login("carol", PASSWORD, Client("198.51.100.1"))
    auth.login("carol", PASSWORD, Client("198.51.100.2"))
    sqlite_container.audit.flush()
    failed = sqlite_container.audit.search(AuditFilters(action="login_failed", limit=1000))
    assert len(failed) >= 5 + 20


def test_sessions_expire_and_are_cleaned(sqlite_container: Container) -> None:
    auth = sqlite_container.auth
    auth.create_user("bob", PASSWORD, "referring_doctor")
    token, session = auth.login("bob", PASSWORD, Client())
    assert session.expires_at - utcnow() <= timedelta(hours=8)
    _long, remembered = auth.login("bob", PASSWORD, Client(), remember=True)
    assert remembered.expires_at - utcnow() > timedelta(days=29)
    assert auth.cleanup(utcnow() + timedelta(hours=9))[0] == 1
    assert auth.session(token) is None
    assert auth.active_sessions() == 1


def test_api_tokens_are_hashed_revocable_and_die_with_the_account(web: RunningWeb) -> None:
    container = web.container
    token = make_user(container, "ann", "researcher")
    with container.db.read() as session:
        from sqlalchemy import text

        stored = session.execute(text("select token_hash from api_tokens")).scalars().all()
    assert token not in stored
    with httpx.Client(base_url=base(web)) as client:
        assert client.get("/api/me", headers=bearer(token)).json()["username"] == "ann"
        assert client.get("/api/me", auth=("ann", token)).status_code == 200  # HTTP Basic
        assert client.get("/api/me", auth=("someone", token)).status_code == 401
        (record,) = container.auth.tokens_of("ann")
        container.auth.revoke_token(record.id, "ann")
        assert client.get("/api/me", headers=bearer(token)).status_code == 401
        second = make_user(container, "ann", "researcher")
        container.auth.set_active("ann", False)
        assert client.get("/api/me", headers=bearer(second)).status_code == 401


def test_cross_site_changes_are_refused(web: RunningWeb) -> None:
    web.container.auth.create_user("adm", PASSWORD, "admin")
    with httpx.Client(base_url=base(web), follow_redirects=False) as client:
        login(client, "adm", PASSWORD)
        token = csrf(client)
        body = {"name": "x"}
        assert client.post("/api/me/tokens", json=body).status_code == 403
        evil = {"X-CSRF-Token": token, "Origin": "https://evil.example"}
        assert client.post("/api/me/tokens", json=body, headers=evil).status_code == 403
        good = client.post("/api/me/tokens", json=body, headers={"X-CSRF-Token": token})
        assert good.status_code == 201 and good.json()["token"].startswith("ves_")


def test_retrieves_are_audited_with_who_where_and_what(web: RunningWeb) -> None:
    container = web.container
    data = make_file(PatientID="AUD1", StudyInstanceUID="1.2.3.4.5")
    container.archive.store(data)
    token = make_user(container, "viewer", "referring_doctor")
    with httpx.Client(base_url=base(web), headers={**bearer(token), "User-Agent": "probe/1"}) as c:
        assert c.get("/dicom-web/studies/1.2.3.4.5/metadata").status_code == 200
        assert c.get("/api/studies/1.2.3.4.5/archive").status_code == 403
    (retrieve,) = container.audit.search(AuditFilters(actor="viewer", action="retrieve"))
    assert retrieve["study_uid"] == "1.2.3.4.5" and retrieve["protocol"] == "dicomweb"
    assert retrieve["user_agent"] == "probe/1" and retrieve["address"] == "127.0.0.1"
    (denied,) = container.audit.search(AuditFilters(actor="viewer", action="download"))
    assert denied["outcome"] == "403"
    container.audit.retention_days = 1
    assert container.audit.cleanup(utcnow() + timedelta(days=2)) >= 2


def test_dimse_requests_are_audited_with_the_calling_ae(sqlite_container: Container) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind

    from vesalius.config import RemoteAE
    from vesalius.dimse.server import DicomServer

    sqlite_container.settings.remote_ae = [
        RemoteAE(name="probe", ae_title="PROBE", role="radiologist")
    ]
    server = DicomServer(
        sqlite_container.settings, sqlite_container.archive, sqlite_container.audit
    )
    host, port = server.start()
    try:
        ae = AE(ae_title="PROBE")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate(host, port, ae_title="VESALIUS")
        assert assoc.is_established
        from io import BytesIO

        from pydicom import Dataset, dcmread

        assoc.send_c_store(dcmread(BytesIO(make_file(PatientID="D1"))))
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assoc.release()
    finally:
        server.stop()
    events = sqlite_container.audit.search(AuditFilters(actor="AE:PROBE"))
    assert {e["action"] for e in events} == {"store", "search"}
    assert all(e["protocol"] == "dimse" and e["address"] == "127.0.0.1" for e in events)
    assert {e["outcome"] for e in events} == {"ok"}


def test_token_lookup_answers_typed_records_on_every_database(container: Container) -> None:
    # The lookup runs on the driver's cursor: its values must still be what the ORM gives.
    auth = container.auth
    auth.create_user("tok", PASSWORD, "researcher", "Tok En")
    secret, _record = auth.create_token("tok", "script")
    user = auth.token_user(secret)
    assert user is not None and user.username == "tok" and user.full_name == "Tok En"
    assert user.active is True and isinstance(user.created_at, datetime)
    (record,) = auth.tokens_of("tok")
    assert isinstance(record.last_used_at, datetime)  # the first use is recorded
    assert auth.token_user(secret, "tok") == user and auth.token_user(secret, "other") is None
    auth.set_active("tok", False)
    assert auth.token_user(secret) is None
    auth.set_active("tok", True)
    auth.revoke_token(record.id)
    assert auth.token_user(secret) is None
