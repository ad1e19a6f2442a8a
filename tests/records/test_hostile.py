"""Hostile input is refused with a clear 4xx, and nothing is written: no row, no blob."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from records_helpers import RunningHttp, model_xml, model_zip, raw_zip, upload_model

ZEROS = b"\0" * (20 * 1024 * 1024)
SUBJECT = "XYZ00015"
UNKNOWN_STUDY = "1.2.826.0.1.3680043.10.1383.424242"


@pytest.fixture
def subject(http: RunningHttp) -> Iterator[RunningHttp]:
    """The server with one subject, and a check afterwards that nothing else was written."""
    assert http.client.post("/api/subjects", json={"subject_id": SUBJECT}).status_code == 201
    before = http.row_counts()
    yield http
    assert http.row_counts() == before
    assert http.record_blobs() == []
    leftovers = [
        p for p in Path(http.container.settings.effective_storage_dir).rglob("*") if p.is_file()
    ]
    assert leftovers == []


def _refused(response: object, status: int, *words: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail


def _lying_zip() -> bytes:
    """A zip whose member says it holds 1000 bytes but inflates to 5 MiB."""
    data = bytearray(raw_zip("mesh.bin", b"\0" * (5 * 1024 * 1024)))
    declared = struct.pack("<I", 1000)
    local = data.find(b"PK\x03\x04")
    data[local + 22 : local + 26] = declared  # uncompressed size in the local header
    central = data.find(b"PK\x01\x02")
    data[central + 24 : central + 28] = declared  # and in the central directory
    return bytes(data)


@pytest.mark.parametrize(
    ("archive", "words"),
    [
        (raw_zip("mesh.bin", ZEROS), ("expands", "zip bomb")),
        (_lying_zip(), ("mesh.bin",)),
        (raw_zip("../../etc/cron.d/evil", b"* * * * * root sh"), ("climbs out", "'..'")),
        (raw_zip("/etc/passwd", b"root::0:0"), ("absolute path",)),
        (raw_zip("C:\\Windows\\evil.dll", b"MZ"), ("absolute path",)),
        (b"this is not a zip", ("not a readable zip",)),
    ],
    ids=["bomb", "lying-sizes", "dotdot", "absolute", "drive", "not-zip"],
)
def test_unsafe_model_zip(subject: RunningHttp, archive: bytes, words: tuple[str, ...]) -> None:
    response = upload_model(subject.client, SUBJECT, archive, model_xml())
    _refused(response, 422, *words)


def test_zip_with_too_many_members(subject: RunningHttp) -> None:
    members = {f"f{n}.txt": b"x" for n in range(1001)}
    _refused(
        upload_model(subject.client, SUBJECT, model_zip(members), model_xml()), 422, "1001 members"
    )


EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE HeartModel [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<HeartModel name="&secret;"/>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<HeartModel name="&lol3;"/>"""


@pytest.mark.parametrize(
    ("xml", "status", "words"),
    [
        (EXTERNAL_ENTITY, 422, ("entities",)),
        (BILLION_LAUGHS, 422, ("entities",)),
        (b"<HeartModel><unclosed></HeartModel>", 422, ("not well-formed",)),
    ],
    ids=["external-entity", "billion-laughs", "malformed"],
)
def test_unsafe_model_xml(
    subject: RunningHttp, xml: bytes, status: int, words: tuple[str, ...]
) -> None:
    _refused(upload_model(subject.client, SUBJECT, model_zip(), xml), status, *words)


def test_oversized_file(subject: RunningHttp) -> None:
    limit = subject.container.settings.max_aux_file_bytes
    url = f"/api/subjects/{SUBJECT}/files"
    # Just over the limit: counted while streamed into the blob store.
    response = subject.client.post(
        url, files={"file": ("big.bin", b"x" * (limit + 1))}, data={"date": "2024-01-01"}
    )
    _refused(response, 413, str(limit), "max_aux_file_bytes")
    # Far over it: refused on the declared length, before the body is read.
    response = subject.client.post(
        url, files={"file": ("huge.bin", b"x" * (limit * 2))}, data={"date": "2024-01-01"}
    )
    _refused(response, 413, "max_aux_file_bytes")


def test_oversized_chunked_upload(subject: RunningHttp) -> None:
    """Without a declared length the bytes are counted as they arrive."""
    limit = subject.container.settings.max_aux_file_bytes
    boundary = "vesaliusboundary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="date"\r\n\r\n2024-01-01\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        chunk = b"x" * 65536
        for _ in range((limit * 3) // len(chunk)):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    response = subject.client.post(
        f"/api/subjects/{SUBJECT}/files",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    _refused(response, 413, "max_aux_file_bytes")


def test_oversized_model_xml(subject: RunningHttp) -> None:
    limit = subject.container.settings.max_heart_model_xml_bytes
    xml = b"<HeartModel>" + b"<a/>" * (limit // 4) + b"</HeartModel>"
    _refused(
        upload_model(subject.client, SUBJECT, model_zip(), xml), 413, "max_heart_model_xml_bytes"
    )


def test_link_to_unknown_study(subject: RunningHttp) -> None:
    client = subject.client
    response = client.post(
        f"/api/subjects/{SUBJECT}/events",
        json={"kind": "gp_visit", "date": "2024-01-01", "study_instance_uids": [UNKNOWN_STUDY]},
    )
    _refused(response, 422, UNKNOWN_STUDY, "not in the archive", "allow_pending")
    response = upload_model(client, SUBJECT, model_zip(), model_xml(studies=(UNKNOWN_STUDY,)))
    _refused(response, 422, UNKNOWN_STUDY, "not in the archive")
    response = client.post(
        f"/api/subjects/{SUBJECT}/events",
        json={"kind": "gp_visit", "date": "2024-01-01", "study_instance_uids": ["not-a-uid"]},
    )
    assert response.status_code == 422


def test_link_endpoint_refuses_unknown_study_but_accepts_pending(sqlite_http: RunningHttp) -> None:
    client = sqlite_http.client
    client.post("/api/subjects", json={"subject_id": SUBJECT})
    event = client.post(
        f"/api/subjects/{SUBJECT}/events", json={"kind": "gp_visit", "date": "2024-01-01"}
    ).json()
    links = f"/api/subjects/{SUBJECT}/events/{event['id']}/links"
    _refused(
        client.post(links, json={"study_instance_uid": UNKNOWN_STUDY}), 422, "not in the archive"
    )
    assert client.get(f"/api/subjects/{SUBJECT}/events/{event['id']}").json()["links"] == []
    pending = client.post(links, json={"study_instance_uid": UNKNOWN_STUDY, "allow_pending": True})
    assert pending.json()["links"] == [{"study_instance_uid": UNKNOWN_STUDY, "present": False}]
    removed = client.delete(f"{links}/{UNKNOWN_STUDY}")
    assert removed.status_code == 200 and removed.json()["links"] == []
    assert client.delete(f"{links}/{UNKNOWN_STUDY}").status_code == 404


def test_failed_row_write_removes_the_blob(
    sqlite_http: RunningHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database failure after the file is stored leaves no blob behind."""
    from vesalius.index import records as sql

    sqlite_http.client.post("/api/subjects", json={"subject_id": SUBJECT})

    def broken(*_args: object, **_kwargs: object) -> None:
        raise zipfile.BadZipFile("simulated database failure")  # any exception will do

    monkeypatch.setattr(sql, "add_file", broken)
    with pytest.raises(Exception, match="simulated"):
        sqlite_http.container.records.add_file(
            SUBJECT,
            __import__("vesalius.records.service", fromlist=["Upload"]).Upload(
                __import__("io").BytesIO(b"data"), "a.txt"
            ),
            __import__("datetime").date(2024, 1, 1),
        )
    assert sqlite_http.record_blobs() == []
    assert sqlite_http.row_counts()["record_events"] == 0
