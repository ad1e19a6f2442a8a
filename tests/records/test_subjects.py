"""Subjects: derived from arriving DICOM by the CAP scheme, and managed over the API."""

from __future__ import annotations

from typing import Any

import pytest
from records_helpers import RunningHttp, serve, store_study

from vesalius.config import SubjectIdScheme
from vesalius.container import build
from vesalius.records.subjects import SubjectRef, derive_subject


@pytest.mark.parametrize(
    ("patient_id", "scheme", "expected"),
    [
        ("XYZ0001501", SubjectIdScheme.CAP, SubjectRef("XYZ00015", 1)),
        ("XYZ0001502", SubjectIdScheme.CAP, SubjectRef("XYZ00015", 2)),
        ("ABC1234510", SubjectIdScheme.CAP, SubjectRef("ABC12345", 10)),
        ("XYZ00015", SubjectIdScheme.CAP, SubjectRef("XYZ00015", None)),  # not a CAP ID
        ("XYZ00015AB", SubjectIdScheme.CAP, SubjectRef("XYZ00015AB", None)),
        ("XYZ0001501", SubjectIdScheme.PATIENT_ID, SubjectRef("XYZ0001501", None)),
        ("  PID7 ", SubjectIdScheme.PATIENT_ID, SubjectRef("PID7", None)),
        ("", SubjectIdScheme.CAP, None),
        (None, SubjectIdScheme.PATIENT_ID, None),
    ],
)
def test_derive_subject(patient_id: str | None, scheme: SubjectIdScheme, expected: Any) -> None:
    assert derive_subject(patient_id, scheme) == expected


def test_cap_scheme_links_arriving_studies_as_sessions(http: RunningHttp) -> None:
    container = http.container
    first = store_study(container, "XYZ0001501", "20230110", StudyDescription="Baseline MR")
    second = store_study(container, "XYZ0001502", "20240215", StudyDescription="Follow-up MR")
    other = store_study(container, "ABC0000901", "20240101")

    page = http.client.get("/api/subjects").json()
    assert [s["subject_id"] for s in page["items"]] == ["ABC00009", "XYZ00015"]
    assert page["total"] == 2

    subject = http.client.get("/api/subjects/XYZ00015").json()
    assert subject["event_count"] == 2
    assert subject["study_count"] == 2
    assert subject["sex"] == "O" and subject["birth_date"] == "1970-01-01"

    events = http.client.get("/api/subjects/XYZ00015/timeline").json()
    assert [(e["kind"], e["date"], e["session_number"]) for e in events] == [
        ("imaging_session", "2023-01-10", 1),
        ("imaging_session", "2024-02-15", 2),
    ]
    assert events[0]["title"] == "Imaging session 1: Baseline MR"
    assert [e["links"] for e in events] == [
        [{"study_instance_uid": first, "present": True}],
        [{"study_instance_uid": second, "present": True}],
    ]
    # More instances of a known study add nothing.
    store_study_again = http.client.get("/api/subjects/ABC00009/timeline").json()
    assert (
        len(store_study_again) == 1
        and store_study_again[0]["links"][0]["study_instance_uid"] == other
    )

    # Deleting a study leaves the session, and its link says the study is gone.
    container.archive.delete(second)
    events = http.client.get("/api/subjects/XYZ00015/timeline").json()
    assert events[1]["links"] == [{"study_instance_uid": second, "present": False}]
    found = http.client.get("/api/subjects", params={"study_instance_uid": first}).json()
    assert [s["subject_id"] for s in found["items"]] == ["XYZ00015"]


def test_patient_id_scheme_is_the_default(make_settings: Any) -> None:
    container = build(make_settings(), migrate=True)
    try:
        for running in serve(container):
            store_study(container, "XYZ0001501")
            subject = running.client.get("/api/subjects/XYZ0001501").json()
            assert subject["event_count"] == 1
            assert running.client.get("/api/subjects/XYZ00015").status_code == 404
    finally:
        container.close()


def test_subject_crud(http: RunningHttp) -> None:
    client = http.client
    created = client.post(
        "/api/subjects",
        json={"subject_id": "SUBJ0001", "sex": "F", "cohort": "pilot", "extra": {"site": "AKL"}},
    )
    assert created.status_code == 201, created.text
    assert created.json()["extra"] == {"site": "AKL"}
    again = client.post("/api/subjects", json={"subject_id": "SUBJ0001"})
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]
    for n in range(2, 6):
        client.post("/api/subjects", json={"subject_id": f"SUBJ000{n}", "cohort": "main"})

    page = client.get("/api/subjects", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5
    assert [s["subject_id"] for s in page["items"]] == ["SUBJ0002", "SUBJ0003"]
    pilot = client.get("/api/subjects", params={"cohort": "pilot"}).json()
    assert [s["subject_id"] for s in pilot["items"]] == ["SUBJ0001"]
    assert client.get("/api/subjects", params={"q": "0004"}).json()["total"] == 1
    assert client.get("/api/subjects", params={"q": "%"}).json()["total"] == 0

    patched = client.patch(
        "/api/subjects/SUBJ0001", json={"birth_date": "1960-05-04", "cohort": None}
    )
    assert patched.status_code == 200
    assert patched.json()["birth_date"] == "1960-05-04"
    assert patched.json()["cohort"] is None and patched.json()["sex"] == "F"

    assert client.delete("/api/subjects/SUBJ0001").status_code == 204
    missing = client.get("/api/subjects/SUBJ0001")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no subject 'SUBJ0001'"}
    bad = client.post("/api/subjects", json={"subject_id": "a/b"})
    assert bad.status_code == 422


def test_openapi_documents_the_records_api(sqlite_http: RunningHttp) -> None:
    document = sqlite_http.client.get("/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/api/subjects",
        "/api/subjects/{subject_id}",
        "/api/subjects/{subject_id}/timeline",
        "/api/subjects/{subject_id}/events/{event_id}",
        "/api/subjects/{subject_id}/files",
        "/api/subjects/{subject_id}/models",
        "/api/subjects/{subject_id}/export",
        "/api/subjects/import",
        "/api/heart-models",
    ):
        assert path in paths, path
    upload = paths["/api/subjects/{subject_id}/files"]["post"]
    assert upload["x-vesalius-body-limit"] == ["max_aux_file_bytes"]
    assert "413" in upload["responses"]
