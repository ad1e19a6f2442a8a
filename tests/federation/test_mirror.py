"""A remote PACS (a real Orthanc) mirrored into the worklist: `vesalius mirror sync`, the
source column and filter in the worklist API and QIDO-RS, and a study retrieved on demand."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from dicomgen import make_dataset, to_bytes, uid
from federation.nodes import Node
from federation.orthanc import Orthanc, running_orthanc
from vesalius.web.dicomweb.multipart import MultipartReader

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path) as running:
        yield running


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, server_databases: Any) -> str | None:
    return None if request.param == "sqlite" else server_databases.create(request.param)


def remotes(orthanc: Orthanc) -> str:
    return (
        f'[{{name = "pacs", dicomweb_url = "{orthanc.dicomweb}"}}, '
        f'{{name = "dimse", ae_title = "{orthanc.aet}", host = "127.0.0.1", '
        f"port = {orthanc.dicom_port}}}, "
        '{name = "gone", dicomweb_url = "http://127.0.0.1:9/dicom-web"}, '
        '{name = "nodimse", ae_title = "NOBODY", host = "127.0.0.1", port = 9}]'
    )


def post(node: Node, path: str) -> httpx.Response:
    return httpx.post(
        node.url + path, headers={"Authorization": f"Bearer {node.token}"}, timeout=30
    )


def qido(node: Node, **params: Any) -> list[dict[str, Any]]:
    answer = httpx.get(
        node.url + "/dicom-web/studies",
        params=params,
        headers={"Authorization": f"Bearer {node.token}", "Accept": "application/dicom+json"},
        timeout=30,
    )
    assert answer.status_code in (200, 204), answer.text + "".join(node.log[-40:])
    return answer.json() if answer.status_code == 200 else []


def value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value", [])
    return values[0] if values else None


SOURCE_TAG = "00091010"


def worklist(node: Node, **params: Any) -> dict[tuple[str, str], dict[str, Any]]:
    page = node.get("/api/worklist", **params)
    return {(p["patient_id"], p["source"]): p for p in page["patients"]}


def test_orthanc_mirrored_into_the_worklist(
    tmp_path: Path, orthanc: Orthanc, database: str | None
) -> None:
    uids = []
    for number in range(3):
        ds = make_dataset(
            PatientID=f"ORT{number}",
            PatientName=f"ORTHANC^PATIENT{number}",
            Modality="MR",
            StudyDescription="Remote study",
        )
        orthanc.store(to_bytes(ds))
        uids.append(ds.StudyInstanceUID)
    # a second series in the first study
    orthanc.store(
        to_bytes(
            make_dataset(
                PatientID="ORT0",
                PatientName="ORTHANC^PATIENT0",
                StudyInstanceUID=uids[0],
                Modality="MR",
                SeriesNumber=2,
            )
        )
    )
    site = Node(tmp_path, "site", database, VESALIUS_REMOTE_PACS=remotes(orthanc))
    local = make_dataset(PatientID="LOC1", PatientName="LOCAL^ONE")
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "one.dcm").write_bytes(to_bytes(local))
    site.run(["import", str(folder)])

    first = site.run(["mirror", "sync", "pacs"])
    assert "full sync, 3 studies listed, 3 written" in first.stdout, first.stdout + first.stderr
    status = json.loads(site.run(["mirror", "status", "--json"]).stdout)
    pacs = next(s for s in status if s["source"] == "pacs")
    assert pacs["studies"] == 3 and pacs["last_error"] is None and pacs["watermark"]

    # nothing new: an incremental sync lists only the studies dated from the watermark on
    again = site.run(["mirror", "sync", "pacs"])
    assert "incremental sync, 0 studies listed, 0 written" in again.stdout, again.stdout

    # a new study dated today: the incremental sync lists and writes that one only
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    new = make_dataset(PatientID="ORT9", PatientName="LATE^ARRIVAL", StudyDate=today)
    orthanc.store(to_bytes(new))
    later = site.run(["mirror", "sync", "pacs"])
    assert "incremental sync, 1 studies listed, 1 written" in later.stdout, later.stdout
    uids.append(new.StudyInstanceUID)

    # the same PACS over C-FIND
    dimse = site.run(["mirror", "sync", "dimse"])
    assert "full sync, 4 studies listed, 4 written" in dimse.stdout, dimse.stdout + dimse.stderr

    # remotes that are not there: a clear error, nothing changed
    gone = site.run(["mirror", "sync", "gone"], check=False)
    assert gone.returncode == 1 and "cannot be reached" in gone.stderr, gone.stderr
    nodimse = site.run(["mirror", "sync", "nodimse"], check=False)
    assert nodimse.returncode == 1 and "cannot be reached" in nodimse.stderr, nodimse.stderr
    unknown = site.run(["mirror", "sync", "nope"], check=False)
    assert unknown.returncode == 1 and "pacs" in unknown.stderr
    status = json.loads(site.run(["mirror", "status", "--json"]).stdout)
    assert next(s for s in status if s["source"] == "gone")["last_error"]

    site.start()
    try:
        rows = worklist(site)
        assert ("LOC1", "local") in rows
        assert ("ORT0", "pacs") in rows and ("ORT0", "dimse") in rows
        assert rows[("ORT0", "pacs")]["last_study_modalities"] == "MR"
        assert rows[("ORT0", "pacs")]["name"] == "ORTHANC^PATIENT0"
        assert set(worklist(site, source="local")) == {("LOC1", "local")}
        only = worklist(site, source="pacs")
        assert set(only) == {(f"ORT{n}", "pacs") for n in (0, 1, 2, 9)}
        assert set(worklist(site, source="pacs", q="late")) == {("ORT9", "pacs")}
        bad = httpx.get(
            site.url + "/api/worklist",
            params={"source": "nope"},
            headers={"Authorization": f"Bearer {site.token}"},
            timeout=30,
        )
        assert bad.status_code == 422

        studies = site.get("/api/patients/ORT0/studies")
        by_source = {s["source"]: s for s in studies["studies"]}
        assert set(by_source) == {"pacs", "dimse"}
        assert by_source["pacs"]["num_series"] == 2 and len(by_source["pacs"]["series"]) == 2
        assert by_source["pacs"]["num_instances"] == 2

        # QIDO-RS: local and remote studies side by side, each with its source
        everything = qido(site)
        sources = {(value(s, "0020000D"), value(s, SOURCE_TAG)) for s in everything}
        assert (local.StudyInstanceUID, "local") in sources
        assert (uids[0], "pacs") in sources and (uids[0], "dimse") in sources
        remote = next(s for s in everything if value(s, SOURCE_TAG) == "pacs")
        assert "00081190" not in remote  # no RetrieveURL: not retrievable here yet
        assert value(remote, "00080056") == "OFFLINE"
        only_pacs = qido(site, source="pacs", PatientID="ORT1")
        assert [value(s, "0020000D") for s in only_pacs] == [uids[1]]
        assert value(only_pacs[0], "00201208") == 1
        assert [value(s, "0020000D") for s in qido(site, source="local")] == [
            local.StudyInstanceUID
        ]
        assert len(qido(site, source="pacs", limit=2)) == 2
        # C-FIND, C-GET and WADO of this archive do not see remote studies
        missing = httpx.get(
            f"{site.url}/dicom-web/studies/{uids[1]}/metadata",
            headers={"Authorization": f"Bearer {site.token}"},
            timeout=30,
        )
        assert missing.status_code == 404

        # retrieve a study on demand (WADO-RS), with progress, then it is local
        path = f"/api/remote/pacs/studies/{uids[0]}/retrieve"
        started = post(site, path)
        assert started.status_code == 202, started.text
        state = wait_retrieval(site, path)
        assert state["state"] == "done", state
        assert state["total"] == 2 and state["done"] == 2 and state["local"] is True
        rows = worklist(site)
        assert ("ORT0", "local") in rows and ("ORT0", "pacs") not in rows
        studies = site.get("/api/patients/ORT0/studies")["studies"]
        assert [s["source"] for s in studies] == ["local"]
        # byte for byte what Orthanc holds
        found = httpx.post(
            f"{orthanc.url}/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": uids[0]}},
            timeout=30,
        ).json()
        assert len(found) == 2
        for instance in found:
            tags = httpx.get(f"{orthanc.url}/instances/{instance}/simplified-tags", timeout=30)
            original = httpx.get(f"{orthanc.url}/instances/{instance}/file", timeout=30).content
            assert ours(site, uids[0], tags.json()) == original

        # from the same PACS over DIMSE: C-GET; the dataset as Orthanc holds it (the file meta
        # is this archive's: DIMSE does not carry it)
        path = f"/api/remote/dimse/studies/{uids[2]}/retrieve"
        assert post(site, path).status_code == 202
        state = wait_retrieval(site, path)
        assert state["state"] == "done" and state["method"] == "c-get", state
        assert (state["total"], state["done"]) == (1, 1)
        [instance] = httpx.post(
            f"{orthanc.url}/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": uids[2]}},
            timeout=30,
        ).json()
        tags = httpx.get(f"{orthanc.url}/instances/{instance}/simplified-tags", timeout=30)
        original = httpx.get(f"{orthanc.url}/instances/{instance}/file", timeout=30).content
        assert dataset_part(ours(site, uids[2], tags.json())) == dataset_part(original)
        assert ("ORT2", "dimse") not in worklist(site) and ("ORT2", "pacs") not in worklist(site)

        # a retrieval that fails says why
        orthanc.delete_study(uids[1])
        path = f"/api/remote/pacs/studies/{uids[1]}/retrieve"
        assert post(site, path).status_code == 202
        state = wait_retrieval(site, path)
        assert state["state"] == "failed" and "no instances" in state["error"], state
        assert post(site, f"/api/remote/pacs/studies/{uid()}/retrieve").status_code == 404
    finally:
        site.stop()
    forgotten = site.run(["mirror", "forget", "dimse"])
    assert "Removed 2 studies of dimse" in forgotten.stdout, forgotten.stdout


def ours(node: Node, study: str, tags: dict[str, str]) -> bytes:
    """The file this archive holds, as WADO-RS sends it (transfer-syntax=*: as stored)."""
    answer = httpx.get(
        f"{node.url}/dicom-web/studies/{study}/series/{tags['SeriesInstanceUID']}"
        f"/instances/{tags['SOPInstanceUID']}",
        headers={
            "Authorization": f"Bearer {node.token}",
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    boundary = answer.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    [part] = MultipartReader(boundary).feed(answer.content)
    return part.body


def dataset_part(data: bytes) -> bytes:
    """A Part 10 file without its preamble and file meta (group 0002, its length first)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    return data[144 + int.from_bytes(data[140:144], "little") :]


def wait_retrieval(node: Node, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        state = node.get(path)
        if state["state"] in ("done", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


class FakePacs(BaseHTTPRequestHandler):
    """A DICOMweb remote that lists 1000 studies, then misbehaves as ``server.mode`` says."""

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        mode = self.server.mode  # type: ignore[attr-defined]
        if url.path.endswith("/series"):
            self._json([])
            return
        offset = int(parse_qs(url.query).get("offset", ["0"])[0])
        if mode == "garbage":
            body = b"<html>surprise</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif mode == "bad-item" and offset == 0:
            self._json([{"0020000D": {"vr": "UI", "Value": ["not a uid!"]}}])
        elif offset == 0:
            self._json(
                [
                    {
                        "0020000D": {"vr": "UI", "Value": [f"1.2.3.{n}"]},
                        "00100020": {"vr": "LO", "Value": [f"FAKE{n}"]},
                        "00080020": {"vr": "DA", "Value": ["20240101"]},
                        "00201208": {"vr": "IS", "Value": [1]},
                    }
                    for n in range(1000)
                ]
            )
        elif mode == "vanish":
            self.connection.shutdown(socket.SHUT_RDWR)  # gone mid-listing, no answer
        elif mode == "slow":
            time.sleep(3)
            self._json([])
        else:
            self._json([])


@pytest.fixture
def fake_pacs() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePacs)
    server.mode = "ok"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_that_misbehaves_leaves_nothing_half_applied(
    tmp_path: Path, fake_pacs: ThreadingHTTPServer
) -> None:
    from vesalius.config import load_settings
    from vesalius.container import build
    from vesalius.federation.mirror import BATCH, Mirror, MirrorError
    from vesalius.index.mirror_models import RemotePatient, RemoteStudy

    port = fake_pacs.server_address[1]
    settings = load_settings(
        env={
            "VESALIUS_DATA_DIR": str(tmp_path / "data"),
            "VESALIUS_REMOTE_PACS": f'[{{name = "fake", dicomweb_url = '
            f'"http://127.0.0.1:{port}/dicom-web"}}]',
        }
    )
    container = build(settings, migrate=True, load_plugins=False)
    mirror = Mirror(settings, container.db, timeout_s=1.0)

    def counts() -> tuple[int, int]:
        from sqlalchemy import func, select

        with container.db.read() as session:
            studies = session.execute(select(func.count(RemoteStudy.id))).scalar_one()
            patients = session.execute(select(func.count(RemotePatient.id))).scalar_one()
        return studies, patients

    try:
        for mode, words in (
            ("garbage", "not JSON"),
            ("bad-item", "no valid StudyInstanceUID"),
        ):
            fake_pacs.mode = mode  # type: ignore[attr-defined]
            with pytest.raises(MirrorError, match=words) as failed:
                mirror.sync("fake")
            assert "'fake'" in str(failed.value)
            state = mirror.status("fake")
            assert state.watermark is None and state.last_error and counts() == (0, 0)

        # gone after the first page, or too slow: the batches of the first page are whole
        # (each study with its patient), the watermark has not moved
        for mode, words in (("vanish", "cannot be reached"), ("slow", "cannot be reached")):
            fake_pacs.mode = mode  # type: ignore[attr-defined]
            with pytest.raises(MirrorError, match=words):
                mirror.sync("fake")
            state = mirror.status("fake")
            assert state.watermark is None and words in (state.last_error or "")
            assert counts() == (1000, 1000) and 1000 % BATCH == 0

        fake_pacs.mode = "ok"  # type: ignore[attr-defined]
        result = mirror.sync("fake")
        assert (result.full, result.listed, result.written) == (True, 1000, 0)
        state = mirror.status("fake")
        assert state.watermark == result.watermark and state.last_error is None
        assert state.studies == 1000
    finally:
        container.close()


def test_serve_syncs_every_mirror_interval(tmp_path: Path, orthanc: Orthanc) -> None:
    first = make_dataset(PatientID="SCH1", PatientName="SCHEDULED^ONE")
    orthanc.store(to_bytes(first))
    site = Node(
        tmp_path,
        "site",
        VESALIUS_REMOTE_PACS=f'[{{name = "pacs", dicomweb_url = "{orthanc.dicomweb}"}}]',
        VESALIUS_MIRROR_INTERVAL_S="1",
    )
    site.start()
    try:

        def mirrored(count: int) -> dict[str, Any]:
            deadline = time.monotonic() + 60
            while True:
                [pacs] = site.get("/api/remote")
                if pacs["studies"] == count or time.monotonic() > deadline:
                    return dict(pacs)
                time.sleep(0.3)

        pacs = mirrored(1)
        assert pacs["studies"] == 1 and pacs["last_error"] is None, pacs
        today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
        orthanc.store(to_bytes(make_dataset(PatientID="SCH2", StudyDate=today)))
        assert mirrored(2)["studies"] == 2
        assert set(worklist(site, source="pacs")) == {("SCH1", "pacs"), ("SCH2", "pacs")}
    finally:
        site.stop()
    assert any("mirroring pacs into the worklist" in line for line in site.log)
