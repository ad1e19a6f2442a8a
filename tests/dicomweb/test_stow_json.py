"""STOW-RS of DICOM JSON metadata with bulk data parts (PS3.18 10.5), and its bad inputs."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import numpy as np
import orjson
from dicomweb_client import DICOMwebClient
from pydicom import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEGLSLossless

from dicomgen import make_dataset, uid

from .conftest import RunningWeb

BOUNDARY = "json-boundary-7"
CONTENT_TYPE = f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}'
FAILED, REFERENCED = "00081198", "00081199"


def metadata(ds: Dataset, location: str) -> dict[str, Any]:
    """The DICOM JSON of *ds* with its pixel data as a BulkDataURI."""
    return ds.to_json_dict(bulk_data_threshold=256, bulk_data_element_handler=lambda e: location)


def body(instances: list[dict[str, Any]], bulk: list[tuple[str, str, bytes]]) -> bytes:
    out = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom+json\r\n\r\n".encode()
        + orjson.dumps(instances)
        + b"\r\n"
    )
    for location, content_type, data in bulk:
        out += (
            (
                f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n"
                f"Content-Location: {location}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


def post(web: RunningWeb, data: bytes, path: str = "/studies") -> httpx.Response:
    return httpx.post(
        web.dicomweb + path, content=data, headers={"Content-Type": CONTENT_TYPE}, timeout=60
    )


def seq(answer: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return answer.get(tag, {}).get("Value", [])


def reason(item: dict[str, Any]) -> str:
    return str(item["00741048"]["Value"][0])


def test_json_with_native_bulk_data_round_trips(sqlite_web: RunningWeb) -> None:
    ds = make_dataset(rows=32, columns=24, PatientName="JSON^STORED")
    ds.NumberOfFrames = 2
    ds.PixelData = np.arange(2 * 32 * 24, dtype=np.uint16).tobytes()
    location = "http://client.example/bulk/pixels-1"
    answer = post(
        sqlite_web,
        body([metadata(ds, location)], [(location, "application/octet-stream", ds.PixelData)]),
    )
    assert answer.status_code == 200, answer.text
    [ref] = seq(answer.json(), REFERENCED)
    assert ref["00081155"]["Value"] == [ds.SOPInstanceUID]
    client = DICOMwebClient(url=sqlite_web.dicomweb)
    got = client.retrieve_instance(
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    )
    assert str(got.PatientName) == "JSON^STORED"
    assert np.array_equal(got.pixel_array, ds.pixel_array)


def test_json_with_compressed_frames(sqlite_web: RunningWeb) -> None:
    ds = make_dataset(rows=40, columns=40)
    ds.NumberOfFrames = 3
    y, x = np.mgrid[0:40, 0:40]
    ds.PixelData = np.stack([(x * y + f) % 4096 for f in range(3)]).astype(np.uint16).tobytes()
    original = copy.deepcopy(ds)
    ds.compress(JPEGLSLossless, generate_instance_uid=False)
    frames = list(generate_frames(ds.PixelData, number_of_frames=3))
    location = "urn:uuid:frames-of-one"
    answer = post(
        sqlite_web,
        body(
            [metadata(ds, location)],
            [(location, f"image/jls; transfer-syntax={JPEGLSLossless}", f) for f in frames],
        ),
    )
    assert answer.status_code == 200, answer.text
    got = DICOMwebClient(url=sqlite_web.dicomweb).retrieve_instance(
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        media_types=(("application/dicom", "*"),),
    )
    assert got.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(got.pixel_array, original.pixel_array)


def test_bulk_data_that_points_nowhere_fails_that_instance_only(sqlite_web: RunningWeb) -> None:
    study = uid()
    good = make_dataset(StudyInstanceUID=study, InstanceNumber=1)
    lost = make_dataset(StudyInstanceUID=study, InstanceNumber=2)
    elsewhere = make_dataset(StudyInstanceUID=study, InstanceNumber=3)
    short = make_dataset(StudyInstanceUID=study, InstanceNumber=4)
    answer = post(
        sqlite_web,
        body(
            [
                metadata(good, "bulk/good"),
                metadata(lost, "bulk/not-sent"),
                # A URI of another request (or another server) is not fetched.
                metadata(elsewhere, f"{sqlite_web.public_dicomweb}/studies/{study}/bulk/1"),
                metadata(short, "bulk/short"),
            ],
            [
                ("bulk/good", "application/octet-stream", good.PixelData),
                ("bulk/short", "application/octet-stream", short.PixelData[:100]),
                ("bulk/unused", "application/octet-stream", b"\x00" * 8),
            ],
        ),
    )
    assert answer.status_code == 202, answer.text
    [ref] = seq(answer.json(), REFERENCED)
    assert ref["00081155"]["Value"] == [good.SOPInstanceUID]
    failed = {f["00081155"]["Value"][0]: reason(f) for f in seq(answer.json(), FAILED)}
    assert set(failed) == {lost.SOPInstanceUID, elsewhere.SOPInstanceUID, short.SOPInstanceUID}
    assert "names no part of this request" in failed[lost.SOPInstanceUID]
    assert "names no part of this request" in failed[elsewhere.SOPInstanceUID]
    assert "needs 512" in failed[short.SOPInstanceUID]
    assert sqlite_web.archive.totals().instances == 1  # nothing of the failed ones


def test_every_instance_failing_is_a_409(sqlite_web: RunningWeb) -> None:
    ds = make_dataset()
    answer = post(sqlite_web, body([metadata(ds, "nowhere")], []))
    assert answer.status_code == 409
    assert "names no part" in reason(seq(answer.json(), FAILED)[0])


def test_broken_requests_are_refused_with_the_reason(sqlite_web: RunningWeb) -> None:
    ds = make_dataset()
    not_json = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom+json\r\n\r\n{{oops\r\n--{BOUNDARY}--\r\n"
    ).encode()
    answer = post(sqlite_web, not_json)
    assert answer.status_code == 400 and "not JSON" in answer.text
    not_array = body([], []).replace(b"[]", b'"text"')
    answer = post(sqlite_web, not_array)
    assert answer.status_code == 400 and "array of DICOM JSON" in answer.text
    no_location = body([metadata(ds, "x")], []).replace(
        f"--{BOUNDARY}--".encode(),
        f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\nabc\r\n--{BOUNDARY}--".encode(),
    )
    answer = post(sqlite_web, no_location)
    assert answer.status_code == 400 and "Content-Location" in answer.text
    unfinished = body([metadata(ds, "x")], [])[:-20]
    answer = post(sqlite_web, unfinished)
    assert answer.status_code == 400 and "closing boundary" in answer.text
    bad_dataset = body([{"00100010": {"vr": "PN", "Value": "not a list"}}], [])
    answer = post(sqlite_web, bad_dataset)
    assert answer.status_code == 409 and "not a DICOM JSON dataset" in answer.text
    # Too large for memory: refused before it is all read.
    sqlite_web.container.settings.stow_json_max_bytes = 4096
    big = body([metadata(ds, "b")], [("b", "application/octet-stream", b"\x00" * 100_000)])
    answer = post(sqlite_web, big)
    assert answer.status_code == 413 and "VESALIUS_STOW_JSON_MAX_BYTES" in answer.text
    sqlite_web.container.settings.stow_json_max_bytes = 512 * 1024 * 1024
    assert sqlite_web.archive.totals().instances == 0
    # Still serving.
    answer = post(
        sqlite_web, body([metadata(ds, "b")], [("b", "application/octet-stream", ds.PixelData)])
    )
    assert answer.status_code == 200


def test_study_of_the_url_is_checked(sqlite_web: RunningWeb) -> None:
    ds = make_dataset()
    answer = post(
        sqlite_web,
        body([metadata(ds, "b")], [("b", "application/octet-stream", ds.PixelData)]),
        path=f"/studies/{uid()}",
    )
    assert answer.status_code == 409
    assert sqlite_web.archive.totals().instances == 0
