"""WADO-RS: instances byte for byte, transcoding, metadata, bulk data and frames."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import pytest
from dicomweb_client import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from vesalius.web.dicomweb.multipart import MultipartReader

from .conftest import RunningWeb, load_sample

ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def parts_of(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(part Content-Type, body) of a multipart answer, read with our own parser."""
    params = dict(p.strip().split("=", 1) for p in response.headers["content-type"].split(";")[1:])
    reader = MultipartReader(params["boundary"].strip('"'))
    parts = reader.feed(response.content)
    assert reader.finished
    return [(p.content_type, p.body) for p in parts]


def test_retrieve_is_byte_for_byte_the_stored_file(web: RunningWeb) -> None:
    sample = load_sample(web.container)
    dw = DICOMwebClient(url=web.dicomweb)
    study, series, sop = sample.uids("ct1")
    got = dw.retrieve_study(study, media_types=(("application/dicom", "*"),))
    assert len(got) == 3
    response = httpx.get(f"{web.dicomweb}/studies/{study}", headers={"Accept": ANY})
    stored = {sample.files[n] for n in ("ct1", "ct2", "ct3")}
    assert {body for _, body in parts_of(response)} == stored
    one = dw.retrieve_instance(study, series, sop)
    assert one.SOPInstanceUID == sop
    series_parts = parts_of(
        httpx.get(f"{web.dicomweb}/studies/{study}/series/{series}", headers={"Accept": ANY})
    )
    assert [body for _, body in series_parts] == [sample.files["ct1"], sample.files["ct2"]]


def test_transfer_syntax_negotiation(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    sample = load_sample(web.container)
    study, series, sop = sample.uids("mr1")  # stored implicit VR little endian
    url = f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
    as_stored = parts_of(httpx.get(url, headers={"Accept": ANY}))
    assert as_stored[0][1] == sample.files["mr1"]
    assert ImplicitVRLittleEndian in as_stored[0][0]
    default = parts_of(
        httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    )
    ds = dcmread(io.BytesIO(default[0][1]))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.PixelData == sample.datasets["mr1"].PixelData
    # RLE stored: the default answer is decoded to explicit VR little endian.
    study, series, sop = sample.uids("rle1")
    url = f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}"
    decoded = dcmread(io.BytesIO(parts_of(httpx.get(url))[0][1]))
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = dcmread(io.BytesIO(sample.files["rle1"]))
    assert np.array_equal(decoded.pixel_array, original.pixel_array)
    raw = parts_of(httpx.get(url, headers={"Accept": ANY}))
    assert raw[0][1] == sample.files["rle1"] and RLELossless in raw[0][0]
    refused = httpx.get(
        url,
        headers={
            "Accept": 'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.4.50"
        },
    )
    assert refused.status_code == 406 and refused.json()["detail"]
    assert httpx.get(url, headers={"Accept": "application/json"}).status_code == 406


def test_metadata_from_the_index(web: RunningWeb) -> None:
    sample = load_sample(web.container)
    dw = DICOMwebClient(url=web.dicomweb)
    study, series, sop = sample.uids("ct1")
    metadata = dw.retrieve_series_metadata(study, series)
    assert [m["00080018"]["Value"][0] for m in metadata] == [sop, sample.uids("ct2")[2]]
    response = httpx.get(f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}/metadata")
    assert response.headers["content-type"] == "application/dicom+json"
    (item,) = response.json()
    url = f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}/bulkdata/7FE00010"
    public = url.replace(web.dicomweb, web.public_dicomweb)
    assert item["7FE00010"] == {"vr": "OW", "BulkDataURI": public}
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]}
    assert len(dw.retrieve_study_metadata(study)) == 3
    bulk = httpx.get(url)
    assert parts_of(bulk)[0][1] == sample.datasets["ct1"].PixelData


def test_frames_native_and_encapsulated(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    sample = load_sample(web.container)
    dw = DICOMwebClient(url=web.dicomweb)
    study, series, sop = sample.uids("ct1")
    (frame,) = dw.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
    assert frame == sample.datasets["ct1"].PixelData
    ohif = httpx.get(
        f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}/frames/1",
        headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
    )
    assert parts_of(ohif) == [
        (
            "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
            sample.datasets["ct1"].PixelData,
        )
    ]
    study, series, sop = sample.uids("rle1")
    original = dcmread(io.BytesIO(sample.files["rle1"]))
    url = f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}/frames/2,1"
    # What OHIF sends: the frames as stored, in both spellings.
    for accept in (
        "multipart/related; type=application/octet-stream; transfer-syntax=*",
        'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    ):
        parts = parts_of(httpx.get(url, headers={"Accept": accept}))
        assert len(parts) == 2 and RLELossless in parts[0][0]
        from pydicom.encaps import generate_frames

        stored = list(generate_frames(original.PixelData, number_of_frames=2))
        assert [body for _, body in parts] == [stored[1], stored[0]]
    # dicomweb-client's default (type="*/*") gets the compressed frames with their type.
    frames = dw.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
    assert frames[0] == stored[0]
    # Plain octet-stream: decoded to native little endian.
    native = parts_of(
        httpx.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    )
    assert native[0][1] == original.pixel_array[1].astype("<u2").tobytes()
    missing = httpx.get(f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}/frames/3")
    assert missing.status_code == 404 and "frame 3" in missing.json()["detail"]
    bad = httpx.get(f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}/frames/x")
    assert bad.status_code == 400


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/studies/1.2.3", "study 1.2.3"),
        ("/studies/1.2.3/metadata", "study 1.2.3"),
        ("/studies/{study}/series/9.9.9", "series 9.9.9"),
        ("/studies/{study}/series/{series}/instances/8.8.8", "instance 8.8.8"),
        ("/studies/{study}/series/{series}/instances/8.8.8/frames/1", "instance 8.8.8"),
        ("/studies/{study}/series/9.9.9/metadata", "series 9.9.9"),
    ],
)
def test_unknown_uids_get_404_with_a_reason(sqlite_web: RunningWeb, path: str, reason: str) -> None:
    sample = load_sample(sqlite_web.container)
    study, series, _ = sample.uids("ct1")
    response = httpx.get(sqlite_web.dicomweb + path.format(study=study, series=series))
    assert response.status_code == 404
    assert reason in response.json()["detail"]


def test_metadata_of_a_large_series_is_fast(sqlite_web: RunningWeb) -> None:
    from dicomgen import make_dataset, to_bytes, uid

    study, series = uid(), uid()
    for number in range(200):
        ds = make_dataset(StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=number)
        sqlite_web.archive.store(to_bytes(ds))
    url = f"{sqlite_web.dicomweb}/studies/{study}/series/{series}/metadata"
    with httpx.Client() as http:
        http.get(url)
        start = time.perf_counter()
        response = http.get(url)
        elapsed = time.perf_counter() - start
    assert len(response.json()) == 200
    assert elapsed < 0.25
