"""A subject exported, then imported into an empty archive, gives back the same record."""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

from records_helpers import RunningHttp, model_xml, model_zip, raw_zip, store_study, upload_model

PENDING = "1.2.826.0.1.3680043.10.1383.777"


def _build_subject(http: RunningHttp) -> None:
    client = http.client
    first = store_study(http.container, "XYZ0001501", "20230110")
    store_study(http.container, "XYZ0001502", "20240215")
    base = "/api/subjects/XYZ00015"
    client.patch(base, json={"cohort": "HCM", "extra": {"consent": "2023-01-01"}})
    note = client.post(
        f"{base}/events",
        json={
            "kind": "clinical_note",
            "date": "2023-01-10",
            "position": 0,
            "note": {"text": "Palpitations; ECG normal.", "author": "Dr A", "note_kind": "GP"},
        },
    ).json()
    client.post(
        f"{base}/events",
        json={
            "kind": "baseline_diagnosis",
            "date": "2023-01-10",
            "diagnosis": {
                "height_cm": 180.2,
                "weight_kg": 77.0,
                "diagnosis": "HCM",
                "extra": {"lvef": 61},
            },
            "study_instance_uids": [first],
        },
    )
    client.post(
        f"{base}/events",
        json={
            "kind": "cath_lab",
            "date": "2023-06-01",
            "study_instance_uids": [PENDING],
            "allow_pending_links": True,
        },
    )
    response = client.post(
        f"{base}/files",
        files={"file": ("echo.dcm.zip", os.urandom(300_000), "application/zip")},
        data={"date": "2023-06-01", "position": "0"},
    )
    assert response.status_code == 201, response.text
    response = upload_model(
        client,
        "XYZ00015",
        model_zip({"mesh/f1.txt": os.urandom(20_000)}),
        model_xml(studies=(first,)),
    )
    assert response.status_code == 201, response.text
    client.patch(f"{base}/events/{note['id']}", json={"position": 2})


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _timeline(http: RunningHttp) -> list[dict[str, Any]]:
    events = http.client.get("/api/subjects/XYZ00015/timeline").json()
    for event in events:
        for key in ("id", "prev_id", "next_id", "created_at"):
            event.pop(key)
    return events


def test_export_import_round_trip(http: RunningHttp, empty_twin: RunningHttp) -> None:
    _build_subject(http)
    exported = http.client.get("/api/subjects/XYZ00015/export")
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "application/zip"
    members = _members(exported.content)
    manifest = json.loads(members["manifest.json"])
    assert manifest["format"] == "vesalius-subject"
    assert [e["kind"] for e in manifest["events"]] == [
        "imaging_session",
        "baseline_diagnosis",
        "clinical_note",
        "aux_file",
        "cath_lab",
        "heart_model",
        "imaging_session",
    ]
    assert len(manifest["studies"]) == 2
    assert sum(name.startswith("dicom/") for name in members) == 2

    imported = empty_twin.client.post(
        "/api/subjects/import",
        files={"file": ("XYZ00015.zip", exported.content, "application/zip")},
    )
    assert imported.status_code == 201, imported.text
    result = imported.json()
    assert result["instances_stored"] == 2 and result["events"] == 7
    assert result["subject"]["cohort"] == "HCM"

    again = empty_twin.client.get("/api/subjects/XYZ00015/export")
    assert _members(again.content) == members  # the same manifest, files, models and DICOM
    assert _timeline(empty_twin) == _timeline(http)
    subject = {
        k: v
        for k, v in http.client.get("/api/subjects/XYZ00015").json().items()
        if not k.endswith("_at")
    }
    twin = {
        k: v
        for k, v in empty_twin.client.get("/api/subjects/XYZ00015").json().items()
        if not k.endswith("_at")
    }
    assert twin == subject

    # A second import of the same subject is refused, and writes nothing.
    before, blobs = empty_twin.row_counts(), empty_twin.record_blobs()
    conflict = empty_twin.client.post(
        "/api/subjects/import", files={"file": ("x.zip", exported.content)}
    )
    assert conflict.status_code == 409
    assert "already exists" in conflict.json()["detail"]
    assert empty_twin.row_counts() == before and empty_twin.record_blobs() == blobs


def _with_member(data: bytes, name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as target:
        for item in source.infolist():
            target.writestr(item, source.read(item.filename))
        target.writestr(zipfile.ZipInfo(name), content)
    return buffer.getvalue()


def test_hostile_imports_write_nothing(sqlite_http: RunningHttp) -> None:
    client = sqlite_http.client
    client.post("/api/subjects", json={"subject_id": "SUBJ0001"})
    client.post(
        "/api/subjects/SUBJ0001/files",
        files={"file": ("a.txt", b"abc")},
        data={"date": "2024-01-01"},
    )
    exported = client.get("/api/subjects/SUBJ0001/export").content
    client.delete("/api/subjects/SUBJ0001")
    assert sqlite_http.record_blobs() == []
    before = sqlite_http.row_counts()

    manifest = json.loads(_members(exported)["manifest.json"])
    tampered = dict(
        manifest,
        events=[
            dict(manifest["events"][0], file=dict(manifest["events"][0]["file"], sha256="0" * 64))
        ],
    )
    cases = [
        (raw_zip("../manifest.json", b"{}"), 422, "climbs out"),
        (_with_member(exported, "/etc/evil", b"x"), 422, "absolute path"),
        (raw_zip("manifest.json", b"{not json"), 422, "manifest is not valid"),
        (_replace_manifest(exported, tampered), 422, "checksum"),
        (raw_zip("dicom/1.2/3.dcm", b"\0" * (2 * 1024 * 1024)), 422, "zip bomb"),
    ]
    for archive, status, words in cases:
        response = client.post("/api/subjects/import", files={"file": ("x.zip", archive)})
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]
        assert sqlite_http.row_counts() == before
        assert sqlite_http.record_blobs() == []


def _replace_manifest(data: bytes, manifest: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as target:
        for item in source.infolist():
            if item.filename != "manifest.json":
                target.writestr(item, source.read(item.filename))
        target.writestr("manifest.json", json.dumps(manifest))
    return buffer.getvalue()
