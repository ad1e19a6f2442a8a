"""storage_transfer_syntax: images re-encoded losslessly on arrival, pixel for pixel."""

from __future__ import annotations

import copy
import io
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

from conftest import listed_test_aes
from dicomgen import make_dataset, to_bytes, uid, write
from vesalius.container import build
from vesalius.dicom.transcode import for_storage

DCMTK = Path("/usr/bin")


@pytest.fixture
def jls_archive(make_settings: Any) -> Any:
    container = build(
        make_settings(storage_transfer_syntax=JPEGLSLossless, remote_ae=listed_test_aes()),
        migrate=True,
    )
    yield container
    container.close()


def stored(container: Any, ds: Any) -> Any:
    [record] = container.archive.instances_of(
        str(ds.StudyInstanceUID), None, str(ds.SOPInstanceUID)
    )
    with container.archive.open(record) as fh:
        return record, dcmread(fh)


def test_images_are_stored_as_jpeg_ls_over_dimse(jls_archive: Any, tmp_path: Path) -> None:
    from vesalius.dimse.server import DicomServer

    study = uid()
    plain = make_dataset(StudyInstanceUID=study, rows=48, columns=40, InstanceNumber=1)
    rle = make_dataset(StudyInstanceUID=study, rows=48, columns=40, InstanceNumber=2, seed=3)
    rle_original = copy.deepcopy(rle)
    rle.compress(RLELossless, generate_instance_uid=False)
    server = DicomServer(jls_archive.settings, jls_archive.archive, None, jls_archive.auth)
    host, port = server.start()
    try:
        for ds, flag in ((plain, "-x="), (rle, "-xr")):
            subprocess.run(
                [str(DCMTK / "storescu"), flag, "-aec", "VESALIUS", host, str(port),
                 str(write(tmp_path, ds))],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        # Re-sending the same file is recognised as the same instance.
        subprocess.run(
            [str(DCMTK / "storescu"), "-aec", "VESALIUS", host, str(port),
             str(tmp_path / f"{plain.SOPInstanceUID}.dcm")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    finally:
        server.stop()
    for original in (plain, rle_original):
        record, ds = stored(jls_archive, original)
        assert record.transfer_syntax_uid == JPEGLSLossless
        assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless
        assert np.array_equal(ds.pixel_array, original.pixel_array)
    assert jls_archive.archive.totals().instances == 2


def test_what_cannot_or_need_not_be_encoded_is_kept_as_received() -> None:
    report = make_dataset()
    del report.PixelData
    data = to_bytes(report)
    assert for_storage(data, JPEGLSLossless) == data
    wide = make_dataset(rows=8, columns=8)
    wide.BitsAllocated, wide.BitsStored, wide.HighBit = 32, 32, 31
    wide.PixelData = np.arange(64, dtype=np.uint32).tobytes()
    data = to_bytes(wide)
    assert for_storage(data, JPEGLSLossless) == data  # JPEG-LS cannot carry 32 bits
    assert for_storage(b"not dicom", JPEGLSLossless) == b"not dicom"
    plain = to_bytes(make_dataset())
    assert for_storage(plain, None) is plain
    assert for_storage(plain, ExplicitVRLittleEndian) == plain
    rle = make_dataset(rows=32, columns=32)
    original = rle.pixel_array.copy()
    rle.compress(RLELossless, generate_instance_uid=False)
    back = dcmread(io.BytesIO(for_storage(to_bytes(rle), ExplicitVRLittleEndian)))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(back.pixel_array, original)


def test_only_lossless_storage_syntaxes_are_accepted(make_settings: Any) -> None:
    with pytest.raises(ValueError, match="cannot be a storage syntax"):
        make_settings(storage_transfer_syntax="1.2.840.10008.1.2.4.50")
    assert make_settings(storage_transfer_syntax="").storage_transfer_syntax is None
