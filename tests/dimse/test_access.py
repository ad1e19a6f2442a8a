"""Who may use which DIMSE service: listed and unlisted AEs, with DCMTK and pynetdicom.

An unlisted calling AE may echo and store only (``unknown_ae_services``); a ``[[remote_ae]]``
with a role (or a bound account) may do what that role's permissions allow. Refusals answer
0x0124 (Refused: Not Authorized) with a comment, and are written to the audit trail.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicomgen import make_dataset, write
from vesalius.auth.dimse_access import NOT_AUTHORIZED, decide
from vesalius.auth.permissions import DIMSE_RULES, DimseService, Role, role_may
from vesalius.config import RemoteAE, Settings
from vesalius.index.people import AuditFilters

DCMTK = Path("/usr/bin")
needs_dcmtk = pytest.mark.skipif(
    not (DCMTK / "findscu").exists(), reason="DCMTK is not installed (apt-get install dcmtk)"
)


def run(tool: str, *args: str | Path) -> str:
    result = subprocess.run(
        [str(DCMTK / tool), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    return (result.stdout + result.stderr).lower()


def listed(settings: Settings, *entries: RemoteAE) -> None:
    settings.remote_ae = [*settings.remote_ae, *entries]


def association(server: Any, calling: str, *contexts: str, **kwargs: Any) -> Any:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for context in contexts:
        ae.add_requested_context(context)
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title, **kwargs)
    assert assoc.is_established
    return assoc


def c_find(server: Any, calling: str) -> list[tuple[Any, Any]]:
    assoc = association(server, calling, StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    try:
        return list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()


def c_get(server: Any, calling: str, study_uid: str) -> tuple[Any, list[Dataset]]:
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0

    assoc = association(
        server,
        calling,
        StudyRootQueryRetrieveInformationModelGet,
        CTImageStorage,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    return responses[-1][0], received


def c_store(server: Any, calling: str, ds: Dataset) -> Any:
    assoc = association(server, calling, CTImageStorage)
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()


def refusals(server: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in server.container.audit.search(AuditFilters(limit=1000))
        if e["protocol"] == "dimse" and e["outcome"] == "refused"
    ]


# -- the decision itself ----------------------------------------------------------------------


def test_every_dimse_service_has_a_rule_in_the_one_table() -> None:
    assert set(DIMSE_RULES) == set(DimseService)
    # The roles decide DIMSE as they decide HTTP: a referring doctor reads but does not store.
    assert role_may(Role.REFERRING_DOCTOR, DIMSE_RULES[DimseService.FIND].permission)
    assert not role_may(Role.REFERRING_DOCTOR, DIMSE_RULES[DimseService.STORE].permission)


def test_decide_by_role_user_host_and_called_title() -> None:
    settings = Settings(
        remote_ae=[
            RemoteAE(name="ws", ae_title="WS1", role="referring_doctor"),
            RemoteAE(name="mod", ae_title="CT1", host="192.0.2.7", port=104, role="radiologist"),
            RemoteAE(name="bound", ae_title="LAB", user="alice"),
            RemoteAE(name="dest", ae_title="DEST", host="192.0.2.8", port=104),
        ]
    )
    F, S, G, M, E = (DimseService(s) for s in ("find", "store", "get", "move", "echo"))
    assert decide(settings, "WS1", "VESALIUS", F).allowed
    refused = decide(settings, "WS1", "VESALIUS", S)
    assert not refused.allowed and refused.status == NOT_AUTHORIZED
    assert "images.store" in refused.reason and len(refused.reason) <= 64
    # Unlisted, or listed without a role: echo and store only.
    for calling in ("STRANGER", "DEST"):
        assert [decide(settings, calling, "X", s).allowed for s in (E, S, F, G, M)] == [
            True,
            True,
            False,
            False,
            False,
        ]
    # A role trusted from its own host only.
    assert decide(settings, "CT1", "VESALIUS", F, address="192.0.2.7").allowed
    elsewhere = decide(settings, "CT1", "VESALIUS", F, address="203.0.113.1")
    assert not elsewhere.allowed and "another host" in elsewhere.reason
    settings.remote_ae_check_host = False
    assert decide(settings, "CT1", "VESALIUS", F, address="203.0.113.1").allowed
    # A bound account: its role while it is active; refused without a way to look it up.
    roles = {"alice": "researcher"}
    assert decide(settings, "LAB", "VESALIUS", G, user_role=roles.get).allowed
    assert not decide(settings, "LAB", "VESALIUS", S, user_role=roles.get).allowed
    assert not decide(settings, "LAB", "VESALIUS", G, user_role={}.get).allowed
    assert not decide(settings, "LAB", "VESALIUS", G).allowed
    # The called AE title: not checked unless asked.
    assert decide(settings, "WS1", "ANY-SCP", F).allowed
    settings.check_called_ae_title = True
    wrong = decide(settings, "WS1", "ANY-SCP", F)
    assert not wrong.allowed and "ANY-SCP" in wrong.reason
    assert not decide(settings, "WS1", "ANY-SCP", E).allowed
    assert decide(settings, "WS1", "VESALIUS", F).allowed


def test_remote_ae_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown role 'superuser'"):
        RemoteAE(name="x", ae_title="X", role="superuser")
    with pytest.raises(ValueError, match="a role or a user, not both"):
        RemoteAE(name="x", ae_title="X", role="admin", user="bob")
    with pytest.raises(ValueError, match="both host and port"):
        RemoteAE(name="x", ae_title="X", host="h")
    from vesalius.config import ConfigError, load_settings

    settings = load_settings(env={"VESALIUS_UNKNOWN_AE_SERVICES": '["echo"]'})
    assert settings.unknown_ae_services == [DimseService.ECHO]
    with pytest.raises(ConfigError, match="unknown_ae_services"):
        load_settings(env={"VESALIUS_UNKNOWN_AE_SERVICES": '["echo", "delete"]'})


# -- against the running server ---------------------------------------------------------------


@needs_dcmtk
def test_dcmtk_from_an_unlisted_ae_may_echo_and_store_only(
    sqlite_dicom_server: Any, tmp_path: Path
) -> None:
    server = sqlite_dicom_server
    ds = make_dataset(PatientID="OPEN")
    path = write(tmp_path, ds)
    peer = ["-aet", "STRANGER", "-aec", server.ae_title, server.host, str(server.port)]
    assert "echo response (success)" in run("echoscu", "-v", *peer)
    assert "(success)" in run("storescu", "-v", *peer, path)
    assert server.archive.totals().instances == 1
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}"]
    found = run("findscu", "-v", "-S", *peer, *keys)
    assert "0x124" in found and "pending" not in found
    got_dir = tmp_path / "got"
    got_dir.mkdir()
    got = run("getscu", "-v", "-S", "-od", got_dir, *peer, *keys)
    assert "0x124" in got and not list(got_dir.iterdir())
    moved = run("movescu", "-v", "-S", "-aem", "STRANGER", *peer, *keys)
    assert "0x124" in moved
    events = refusals(server)
    assert sorted((e["action"], e["object"]) for e in events) == [
        ("retrieve", "C-GET"),
        ("retrieve", "C-MOVE"),
        ("search", "C-FIND"),
    ]
    assert all(e["actor"] == "AE:STRANGER" and e["address"] == "127.0.0.1" for e in events)
    assert all("not listed" in e["detail"] for e in events)


@needs_dcmtk
def test_dcmtk_from_a_listed_ae_finds_and_gets(sqlite_dicom_server: Any, tmp_path: Path) -> None:
    server = sqlite_dicom_server
    listed(server.container.settings, RemoteAE(name="ws", ae_title="WS1", role="referring_doctor"))
    ds = make_dataset(PatientID="LISTED")
    c_store(server, "STRANGER", ds)
    peer = ["-aet", "WS1", "-aec", server.ae_title, server.host, str(server.port)]
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}"]
    found = run("findscu", "-v", "-S", *peer, *keys)
    assert "pending" in found and "0x124" not in found
    got_dir = tmp_path / "got"
    got_dir.mkdir()
    run("getscu", "-S", "-od", got_dir, *peer, *keys)
    assert len(list(got_dir.iterdir())) == 1
    # A referring doctor's role does not store.
    stored = run("storescu", "-v", *peer, write(tmp_path / "in", make_dataset()))
    assert "0x124" in stored or "notauthori" in stored
    assert server.archive.totals().instances == 1
    assert [e["object"] for e in refusals(server)] == ["C-STORE"]


def test_refusals_carry_status_and_comment(sqlite_dicom_server: Any) -> None:
    server = sqlite_dicom_server
    ds = make_dataset(PatientID="P1")
    assert c_store(server, "STRANGER", ds).Status == 0
    [(status, identifier)] = c_find(server, "STRANGER")
    assert status.Status == NOT_AUTHORIZED and identifier is None
    assert status.ErrorComment == "AE STRANGER is not listed with a role; C-FIND refused"
    status, received = c_get(server, "STRANGER", ds.StudyInstanceUID)
    assert status.Status == NOT_AUTHORIZED and "C-GET" in status.ErrorComment
    assert received == []
    assoc = association(server, "STRANGER", StudyRootQueryRetrieveInformationModelMove)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ds.StudyInstanceUID
    [(status, _)] = list(
        assoc.send_c_move(query, "STRANGER", StudyRootQueryRetrieveInformationModelMove)
    )
    assoc.release()
    assert status.Status == NOT_AUTHORIZED and "C-MOVE" in status.ErrorComment
    # The listed client of the fixtures still finds the study: refusal is per calling AE.
    answers = c_find(server, "TESTSCU")
    assert [s.Status for s, _ in answers] == [0xFF00, 0x0000]


def test_an_ae_bound_to_an_account_follows_the_account(sqlite_dicom_server: Any) -> None:
    server = sqlite_dicom_server
    auth = server.container.auth
    auth.create_user("lab", "a long enough secret 1", "researcher")
    listed(server.container.settings, RemoteAE(name="lab", ae_title="LAB", user="lab"))
    ds = make_dataset(PatientID="P2")
    c_store(server, "STRANGER", ds)
    status, received = c_get(server, "LAB", ds.StudyInstanceUID)
    assert status.Status == 0 and len(received) == 1
    # A researcher may not store, even from a bound AE.
    refused = c_store(server, "LAB", make_dataset())
    assert refused.Status == NOT_AUTHORIZED and "researcher" in refused.ErrorComment
    import gc

    from vesalius.dimse.server import DicomServer

    for running in (o for o in gc.get_objects() if isinstance(o, DicomServer)):
        running.access.ROLE_CACHE_SECONDS = 0
    auth.set_active("lab", False)
    [(status, _)] = c_find(server, "LAB")
    assert status.Status == NOT_AUTHORIZED and "disabled" in status.ErrorComment


def test_a_listed_host_is_checked(sqlite_dicom_server: Any) -> None:
    server = sqlite_dicom_server
    settings = server.container.settings
    listed(
        settings,
        RemoteAE(name="far", ae_title="FAR", host="192.0.2.1", port=104, role="admin"),
        RemoteAE(name="near", ae_title="NEAR", host="localhost", port=104, role="admin"),
    )
    [(status, _)] = c_find(server, "FAR")
    assert status.Status == NOT_AUTHORIZED and "another host" in status.ErrorComment
    assert [s.Status for s, _ in c_find(server, "NEAR")] == [0x0000]


def test_what_an_unlisted_ae_may_do_is_a_setting(sqlite_dicom_server: Any) -> None:
    server = sqlite_dicom_server
    server.container.settings.unknown_ae_services = [DimseService.ECHO, DimseService.FIND]
    assert c_store(server, "STRANGER", make_dataset()).Status == NOT_AUTHORIZED
    assert [s.Status for s, _ in c_find(server, "STRANGER")] == [0x0000]
    assert server.archive.totals().instances == 0


def test_called_ae_title_checked_when_configured(make_settings: Any) -> None:
    from vesalius.container import build
    from vesalius.dimse.server import DicomServer

    settings = make_settings(check_called_ae_title=True)
    container = build(settings, migrate=True)
    server = DicomServer(settings, container.archive, container.audit, container.auth)
    host, port = server.start()
    try:
        for called, expected in (("ANY-SCP", False), ("VESALIUS", True)):
            ae = AE(ae_title="STRANGER")
            ae.add_requested_context(Verification)
            assoc = ae.associate(host, port, ae_title=called)
            assert assoc.is_established is expected, called
            if assoc.is_established:
                assoc.release()
    finally:
        server.stop()
        container.close()


def test_hostile_calling_titles_are_refused_and_the_server_goes_on(
    sqlite_dicom_server: Any,
) -> None:
    server = sqlite_dicom_server
    # Trailing spaces are padding; titles are case-sensitive; a long title is not a listed one.
    for calling, expected in (
        ("TESTSCU ", 0x0000),
        ("testscu", NOT_AUTHORIZED),
        ("A" * 16, NOT_AUTHORIZED),
    ):
        assert [s.Status for s, _ in c_find(server, calling)] == [expected], calling
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        raw.sendall(b"\x01\x00\x00\x00\x00\x10" + b"\x00" * 16)  # a truncated A-ASSOCIATE-RQ
    assert [s.Status for s, _ in c_find(server, "TESTSCU")] == [0x0000]
