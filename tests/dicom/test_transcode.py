"""Choosing and producing the transfer syntax a requester accepts (pure functions)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomgen import make_dataset, to_bytes
from vesalius.dicom.syntaxes import move_proposal, read_for
from vesalius.dicom.transcode import TranscodeError, choose_syntax, frame_target


def test_choose_prefers_stored_then_uncompressed_then_jpeg_ls() -> None:
    stored = RLELossless
    assert choose_syntax(stored, {RLELossless, ExplicitVRLittleEndian}, allow_lossy=False) == stored
    both = {ImplicitVRLittleEndian, JPEGLSLossless}
    assert choose_syntax(stored, both, allow_lossy=False) == ImplicitVRLittleEndian
    every = {JPEGLSLossless, JPEG2000Lossless}
    assert choose_syntax(ExplicitVRLittleEndian, every, allow_lossy=False) == JPEGLSLossless
    assert choose_syntax(stored, {JPEG2000, JPEGLSNearLossless}, allow_lossy=True) == (
        JPEGLSNearLossless
    )
    with pytest.raises(TranscodeError, match="lossy transcoding is off"):
        choose_syntax(stored, {JPEG2000}, allow_lossy=False)
    with pytest.raises(TranscodeError, match="can send this instance as"):
        choose_syntax(stored, {JPEGBaseline8Bit}, allow_lossy=True)


def test_frame_targets() -> None:
    assert frame_target("image/jls", None, allow_lossy=False) == JPEGLSLossless
    assert frame_target("image/jp2", "*", allow_lossy=False) == JPEG2000Lossless
    assert frame_target("image/dicom-rle", RLELossless, allow_lossy=False) == RLELossless
    assert frame_target("image/jpeg", None, allow_lossy=True) is None
    with pytest.raises(TranscodeError, match="cannot be given as"):
        frame_target("image/jls", JPEG2000Lossless, allow_lossy=False)
    with pytest.raises(TranscodeError, match="lossy"):
        frame_target("image/jp2", JPEG2000, allow_lossy=False)
    assert frame_target("image/jp2", JPEG2000, allow_lossy=True) == JPEG2000


def test_move_proposal_offers_what_can_be_encoded() -> None:
    proposal = move_proposal({CTImageStorage: {RLELossless, ExplicitVRLittleEndian}})
    assert proposal == [
        (CTImageStorage, [RLELossless]),
        (CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (CTImageStorage, [JPEGLSLossless]),
        (CTImageStorage, [JPEG2000Lossless]),
    ]
    lossy = move_proposal({CTImageStorage: {ExplicitVRLittleEndian}}, allow_lossy=True)
    assert (CTImageStorage, [JPEGLSNearLossless]) in lossy


@pytest.mark.parametrize("stored", [ExplicitVRBigEndian, RLELossless, ImplicitVRLittleEndian])
def test_read_for_encodes_from_any_stored_syntax(stored: str) -> None:
    original = make_dataset(rows=40, columns=40)
    ds = copy.deepcopy(original)
    if stored == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
        data = to_bytes(ds)
    else:
        ds.file_meta.TransferSyntaxUID = stored
        if stored == ExplicitVRBigEndian:  # pydicom writes pixel bytes as given
            ds.PixelData = original.pixel_array.astype(">u2").tobytes()
        from io import BytesIO

        buffer = BytesIO()
        ds.save_as(
            buffer,
            enforce_file_format=True,
            implicit_vr=stored == ImplicitVRLittleEndian,
            little_endian=stored != ExplicitVRBigEndian,
        )
        data = buffer.getvalue()
    got = read_for(data, stored, {JPEGLSLossless})
    assert got.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(got.pixel_array, original.pixel_array)
