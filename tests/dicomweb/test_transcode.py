"""WADO-RS in compressed syntaxes the archive encodes: JPEG-LS, JPEG 2000 and RLE, pixel for pixel."""

from __future__ import annotations

import copy
import io
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomgen import make_dataset, to_bytes

from .test_wado import parts_of

LOSSLESS = [JPEGLSLossless, JPEG2000Lossless, RLELossless]


def _frames(rows: int = 64, columns: int = 48, count: int = 3, signed: bool = False) -> Dataset:
    """A multi-frame 16-bit image with enough structure to compress."""
    ds = make_dataset(rows=rows, columns=columns)
    ds.NumberOfFrames = count
    ds.BitsStored, ds.HighBit = 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    y, x = np.mgrid[0:rows, 0:columns]
    frames = [((x * 37 + y * 11 + f * 1000) % 4096) - (1024 if signed else 0) for f in range(count)]
    array = np.stack(frames).astype(np.int16 if signed else np.uint16)
    ds.PixelData = array.tobytes()
    return ds


def _colour16() -> Dataset:
    ds = make_dataset(rows=8, columns=8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsStored, ds.HighBit = 16, 15
    ds.PixelData = np.arange(8 * 8 * 3, dtype=np.uint16).tobytes()
    return ds


def _store(web: Any, ds: Dataset) -> str:
    web.archive.store(to_bytes(ds), origin="test")
    return (
        f"{web.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def _accept(syntax: str) -> dict[str, str]:
    return {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'}


@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda s: UID(s).keyword)
def test_instances_in_each_lossless_syntax_pixel_for_pixel(sqlite_web: Any, syntax: str) -> None:
    original = _frames(signed=syntax == JPEG2000Lossless)
    url = _store(sqlite_web, original)
    response = httpx.get(url, headers=_accept(syntax), timeout=60)
    assert response.status_code == 200, response.text
    [(content_type, body)] = parts_of(response)
    assert f"transfer-syntax={syntax}" in content_type
    got = dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == syntax
    assert got.SOPInstanceUID == original.SOPInstanceUID
    assert "LossyImageCompression" not in got
    assert np.array_equal(got.pixel_array, original.pixel_array)


def test_dicomweb_client_asks_for_jpeg_ls_and_gets_it(sqlite_web: Any) -> None:
    original = _frames()
    _store(sqlite_web, original)
    client = DICOMwebClient(url=sqlite_web.dicomweb)
    got = client.retrieve_instance(
        str(original.StudyInstanceUID),
        str(original.SeriesInstanceUID),
        str(original.SOPInstanceUID),
        media_types=(("application/dicom", JPEGLSLossless),),
    )
    assert got.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(got.pixel_array, original.pixel_array)


def test_compressed_stored_instance_is_re_encoded(sqlite_web: Any) -> None:
    original = _frames()
    rle = copy.deepcopy(original)
    rle.compress(RLELossless, generate_instance_uid=False)
    url = _store(sqlite_web, rle)
    [(_, body)] = parts_of(httpx.get(url, headers=_accept(JPEGLSLossless), timeout=60))
    got = dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(got.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    ("media_type", "syntax"),
    [
        ("image/jls", JPEGLSLossless),
        ("image/jp2", JPEG2000Lossless),
        ("image/dicom-rle", RLELossless),
    ],
)
def test_frames_encoded_one_by_one(sqlite_web: Any, media_type: str, syntax: str) -> None:
    original = _frames(count=4)
    url = _store(sqlite_web, original)
    response = httpx.get(
        f"{url}/frames/3,1",
        headers={"Accept": f'multipart/related; type="{media_type}"'},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    parts = parts_of(response)
    assert [ct.split(";")[0] for ct, _ in parts] == [media_type, media_type]
    assert all(f"transfer-syntax={syntax}" in ct for ct, _ in parts)
    decoder = get_decoder(UID(syntax))
    for (_, body), number in zip(parts, [3, 1], strict=True):
        frame, _ = decoder.as_array(
            encapsulate([body]),
            rows=64,
            columns=48,
            samples_per_pixel=1,
            bits_allocated=16,
            bits_stored=16,
            pixel_representation=0,
            photometric_interpretation="MONOCHROME2",
            number_of_frames=1,
        )
        assert np.array_equal(frame, original.pixel_array[number - 1])


def test_lossy_syntaxes_are_refused_while_lossy_transcoding_is_off(sqlite_web: Any) -> None:
    url = _store(sqlite_web, _frames())
    for syntax in (JPEGLSNearLossless, JPEG2000):
        response = httpx.get(url, headers=_accept(syntax), timeout=60)
        assert response.status_code == 406
        assert "lossy transcoding is off" in response.text
        assert "VESALIUS_TRANSCODE_LOSSY" in response.text
    response = httpx.get(
        f"{url}/frames/1",
        headers={
            "Accept": f'multipart/related; type="image/jls"; transfer-syntax={JPEGLSNearLossless}'
        },
    )
    assert response.status_code == 406 and "lossy" in response.text


def test_lossy_when_allowed_is_marked_lossy(sqlite_web: Any) -> None:
    sqlite_web.container.settings.transcode_lossy = True
    original = _frames()
    url = _store(sqlite_web, original)
    [(_, body)] = parts_of(httpx.get(url, headers=_accept(JPEGLSNearLossless), timeout=60))
    got = dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == JPEGLSNearLossless
    assert got.LossyImageCompression == "01"
    assert "ISO_14495_1" in got.LossyImageCompressionMethod
    difference = np.abs(got.pixel_array.astype(int) - original.pixel_array.astype(int))
    assert difference.max() <= 2  # the JPEG-LS error bound


def test_an_image_the_encoder_cannot_take_is_refused_with_the_reason(sqlite_web: Any) -> None:
    tiny = _colour16()  # 8 x 8, colour, 16 bits
    url = _store(sqlite_web, tiny)
    response = httpx.get(url, headers=_accept(JPEG2000Lossless), timeout=60)
    assert response.status_code == 406
    assert "at least 32 x 32 pixels" in response.text
    # The same image as JPEG-LS (colour, 16 bits) is fine, pixel for pixel.
    [(_, body)] = parts_of(httpx.get(url, headers=_accept(JPEGLSLossless), timeout=60))
    got = dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(got.pixel_array, tiny.pixel_array)
    # 32 bits allocated: JPEG-LS cannot carry it.
    wide = make_dataset(rows=8, columns=8)
    wide.BitsAllocated, wide.BitsStored, wide.HighBit = 32, 32, 31
    wide.PixelData = np.arange(64, dtype=np.uint32).tobytes()
    response = httpx.get(_store(sqlite_web, wide), headers=_accept(JPEGLSLossless), timeout=60)
    assert response.status_code == 406
    assert "needs 8 or 16 bits allocated; the image has 32" in response.text
    # A syntax nobody can encode here (JPEG baseline): refused, naming what can be had.
    response = httpx.get(url, headers=_accept("1.2.840.10008.1.2.4.50"), timeout=60)
    assert response.status_code == 406
    assert "JPEG-LS Lossless" in response.text
    # Still serving, and uncompressed as before.
    [(_, body)] = parts_of(httpx.get(url, headers=_accept(ExplicitVRLittleEndian)))
    assert dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
