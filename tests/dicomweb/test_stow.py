"""STOW-RS with dicomweb-client, and every kind of bad body."""

from __future__ import annotations

import httpx
import pytest
from dicomweb_client import DICOMwebClient

from dicomgen import make_dataset, make_file, to_bytes, uid

from .conftest import RunningWeb

BOUNDARY = "test-boundary-42"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def body(*parts: bytes, part_type: str = "application/dicom", close: bool = True) -> bytes:
    out = b""
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return out


def seq(answer: dict, tag: str) -> list[dict]:  # type: ignore[type-arg]
    return answer.get(tag, {}).get("Value", [])


def test_store_with_dicomweb_client_then_retrieve(web: RunningWeb) -> None:
    study = uid()
    datasets = [make_dataset(StudyInstanceUID=study, InstanceNumber=i, seed=i) for i in range(3)]
    dw = DICOMwebClient(url=web.dicomweb)
    answer = dw.store_instances(datasets)
    refs = answer.ReferencedSOPSequence
    assert {r.ReferencedSOPInstanceUID for r in refs} == {d.SOPInstanceUID for d in datasets}
    assert all(r.RetrieveURL.endswith(r.ReferencedSOPInstanceUID) for r in refs)
    assert "FailedSOPSequence" not in answer
    assert web.archive.totals().instances == 3
    # Re-sending is idempotent: success again, nothing added.
    again = dw.store_instances(datasets)
    assert len(again.ReferencedSOPSequence) == 3
    assert web.archive.totals().instances == 3
    retrieved = dw.retrieve_study(study)
    assert sorted(d.SOPInstanceUID for d in retrieved) == sorted(d.SOPInstanceUID for d in datasets)


def test_partial_success_and_study_mismatch(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    study = uid()
    good = make_file(StudyInstanceUID=study)
    elsewhere = make_dataset()
    truncated = make_file(StudyInstanceUID=study)[:-100]
    response = httpx.post(
        f"{web.dicomweb}/studies/{study}",
        content=body(good, to_bytes(elsewhere), b"not dicom at all", truncated),
        headers={"Content-Type": CONTENT_TYPE},
    )
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/dicom+json"
    answer = response.json()
    assert len(seq(answer, "00081199")) == 1
    failed = seq(answer, "00081198")
    assert [f["00081197"]["Value"][0] for f in failed] == [0xA900, 0xC000, 0xC000]
    assert failed[0]["00081155"]["Value"] == [elsewhere.SOPInstanceUID]
    assert "truncated" in failed[2]["00741048"]["Value"][0]
    # Nothing but the good instance is stored, and no orphan file is left.
    assert web.archive.totals().instances == 1
    assert list(web.archive.iter_orphans()) == []
    assert len([k for k in web.container.blobs.iter_keys() if k.startswith("dicom/")]) == 1


def test_all_failed_is_409(sqlite_web: RunningWeb) -> None:
    response = httpx.post(
        f"{sqlite_web.dicomweb}/studies",
        content=body(b"garbage", b"more garbage"),
        headers={"Content-Type": CONTENT_TYPE},
    )
    assert response.status_code == 409
    assert len(seq(response.json(), "00081198")) == 2


@pytest.mark.parametrize(
    "content_type, content, status",
    [
        ("application/dicom", make_file(), 415),
        ("application/json", b"{}", 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', b"--x--", 400),
        ('multipart/related; type="application/dicom"', b"no boundary", 400),
        (CONTENT_TYPE, b"this body has no boundary in it", 400),
    ],
)
def test_bad_bodies(sqlite_web: RunningWeb, content_type: str, content: bytes, status: int) -> None:
    response = httpx.post(
        f"{sqlite_web.dicomweb}/studies", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == status
    assert response.json()["detail"]
    assert sqlite_web.archive.totals().instances == 0
    assert httpx.get(f"{sqlite_web.dicomweb}/studies").status_code == 200


def test_body_cut_inside_a_part(sqlite_web: RunningWeb) -> None:
    first = make_file()
    cut = body(first, make_file(), close=False)[:-500]
    response = httpx.post(
        f"{sqlite_web.dicomweb}/studies", content=cut, headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status_code == 202
    failed = seq(response.json(), "00081198")
    assert "ended inside a part" in failed[0]["00741048"]["Value"][0]
    assert sqlite_web.archive.totals().instances == 1


def test_streamed_upload_in_small_chunks(sqlite_web: RunningWeb) -> None:
    files = [make_file(seed=i) for i in range(5)]
    payload = body(*files)

    def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(payload), 777):
            yield payload[start : start + 777]

    response = httpx.post(
        f"{sqlite_web.dicomweb}/studies", content=chunks(), headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status_code == 200
    assert len(seq(response.json(), "00081199")) == 5


def test_other_content_under_a_known_uid_is_a_warning(sqlite_web: RunningWeb) -> None:
    first = make_dataset(seed=1)
    changed = make_dataset(seed=2, SOPInstanceUID=first.SOPInstanceUID)
    changed.StudyInstanceUID = first.StudyInstanceUID
    changed.SeriesInstanceUID = first.SeriesInstanceUID
    changed.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    url = f"{sqlite_web.dicomweb}/studies"
    headers = {"Content-Type": CONTENT_TYPE}
    assert httpx.post(url, content=body(to_bytes(first)), headers=headers).status_code == 200
    response = httpx.post(url, content=body(to_bytes(changed)), headers=headers)
    assert response.status_code == 202
    (item,) = seq(response.json(), "00081199")
    assert item["00081196"]["Value"] == [0xB006]
    assert sqlite_web.archive.totals().instances == 1
