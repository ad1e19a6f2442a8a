"""Encoding pixel data into compressed transfer syntaxes for a requester that accepts only those.

Files are stored as they arrived; on retrieve (WADO-RS, C-GET, C-MOVE) a requester that takes
neither the stored syntax nor an uncompressed one gets JPEG-LS lossless, JPEG 2000 lossless or
RLE lossless, in that order of preference, encoded by pydicom's encoders (pyjpegls,
pylibjpeg-openjpeg, pylibjpeg-rle or pydicom's own RLE). Lossy syntaxes (JPEG-LS near-lossless,
JPEG 2000) are used only when the ``transcode_lossy`` setting allows them.

Everything here is a pure function over bytes and datasets, so every network layer can call it:
:func:`choose_syntax` picks the syntax, :func:`encode_dataset` and :func:`encode_frames` do the
work, and each raises :class:`TranscodeError` with a reason a person can act on.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

log = logging.getLogger(__name__)


class TranscodeError(Exception):
    """The stored file cannot be given in any syntax the requester accepts; says why."""


# Preference order: best compression of medical images first.
LOSSLESS_TARGETS: tuple[str, ...] = (JPEGLSLossless, JPEG2000Lossless, RLELossless)
LOSSY_TARGETS: tuple[str, ...] = (JPEGLSNearLossless, JPEG2000)
# Encoder options for the lossy syntaxes: JPEG-LS error bound, JPEG 2000 compression ratio.
LOSSY_OPTIONS: dict[str, dict[str, Any]] = {
    JPEGLSNearLossless: {"jls_error": 2},
    JPEG2000: {"j2k_cr": [10]},
}
LOSSY_METHOD = {JPEGLSNearLossless: "ISO_14495_1", JPEG2000: "ISO_15444_1"}
# The frame media type of each target (PS3.18 Table 8.7.3-2) and its default syntax.
FRAME_TYPE_DEFAULTS: dict[str, str] = {
    "image/jls": JPEGLSLossless,
    "image/jp2": JPEG2000Lossless,
    "image/dicom-rle": RLELossless,
}
UNCOMPRESSED_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def targets(allow_lossy: bool) -> tuple[str, ...]:
    """The compressed syntaxes Vesalius can encode, in order of preference."""
    return LOSSLESS_TARGETS + LOSSY_TARGETS if allow_lossy else LOSSLESS_TARGETS


def encodable(allow_lossy: bool = True) -> frozenset[str]:
    """Every syntax Vesalius can encode into, for the conformance statement."""
    return frozenset(targets(allow_lossy))


def choose_syntax(stored: str, accepted: Collection[str], *, allow_lossy: bool) -> str:
    """The syntax to send a stored file in, to a requester that accepts *accepted*.

    The stored syntax when accepted, else uncompressed little endian (explicit first), else
    the first compressed syntax Vesalius can encode.

    Raises
    ------
    TranscodeError
        When none of *accepted* can be produced; the message lists what could be.
    """
    if stored in accepted:
        return stored
    for syntax in UNCOMPRESSED_LE:
        if syntax in accepted:
            return syntax
    for syntax in targets(allow_lossy):
        if syntax in accepted:
            return syntax
    lossy_wanted = [s for s in LOSSY_TARGETS if s in accepted]
    if lossy_wanted and not allow_lossy:
        raise TranscodeError(
            f"{UID(lossy_wanted[0]).name} is lossy and lossy transcoding is off "
            "(VESALIUS_TRANSCODE_LOSSY); accept a lossless syntax such as JPEG-LS lossless "
            f"({JPEGLSLossless}) or uncompressed ({ExplicitVRLittleEndian})"
        )
    names = ", ".join(sorted(UID(s).name for s in accepted)) or "nothing"
    return_list = ", ".join(UID(s).name for s in (UID(stored), *UNCOMPRESSED_LE))
    raise TranscodeError(
        f"the requester accepts {names}; Vesalius can send this instance as {return_list}, "
        f"or encode {', '.join(UID(s).name for s in targets(allow_lossy))}"
    )


def check_image(ds: Dataset, syntax: str) -> None:
    """Refuse, with the reason, pixel data that *syntax* cannot carry (before encoding)."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise TranscodeError(f"float pixel data cannot be encoded as {UID(syntax).name}")
        return
    bits = int(ds.get("BitsAllocated", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    name = UID(syntax).name
    if syntax in (JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000) and bits not in (
        8,
        16,
    ):
        raise TranscodeError(f"{name} needs 8 or 16 bits allocated; the image has {bits}")
    if syntax == RLELossless and bits not in (8, 16, 32):
        raise TranscodeError(f"{name} needs 8, 16 or 32 bits allocated; the image has {bits}")
    if samples not in (1, 3):
        raise TranscodeError(f"{name} needs 1 or 3 samples per pixel; the image has {samples}")
    if syntax in (JPEG2000Lossless, JPEG2000) and min(int(ds.Rows), int(ds.Columns)) < 32:
        # OpenJPEG's six resolution levels need at least 32 pixels each way.
        raise TranscodeError(
            f"{name} needs images of at least 32 x 32 pixels for the JPEG 2000 encoder; this "
            f"one is {ds.Columns} x {ds.Rows}: accept JPEG-LS lossless ({JPEGLSLossless}) or "
            f"RLE ({RLELossless})"
        )


def encode_dataset(ds: Dataset, syntax: str) -> Dataset:
    """The dataset with its pixel data in *syntax* (compressed datasets are decoded first).

    The SOP Instance UID is kept; a lossy syntax marks Lossy Image Compression.

    Raises
    ------
    TranscodeError
        When the image cannot be encoded in *syntax*, with the encoder's reason.
    """
    check_image(ds, syntax)
    if "PixelData" not in ds:
        ds.file_meta.TransferSyntaxUID = UID(syntax)
        return ds
    name = UID(syntax).name
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:  # decoders raise many kinds
            raise TranscodeError(
                f"cannot decode {ds.file_meta.TransferSyntaxUID.name}: {exc}"
            ) from None
    elif not ds.file_meta.TransferSyntaxUID.is_little_endian:
        _to_little_endian(ds)
    try:
        ds.compress(syntax, generate_instance_uid=False, **LOSSY_OPTIONS.get(syntax, {}))
    except Exception as exc:  # encoders raise many kinds
        raise TranscodeError(f"cannot encode as {name}: {_first_line(exc)}") from None
    if syntax in LOSSY_TARGETS:
        ds.LossyImageCompression = "01"
        methods = list(ds.get("LossyImageCompressionMethod", []) or [])
        ds.LossyImageCompressionMethod = [*methods, LOSSY_METHOD[syntax]]
    return ds


def _to_little_endian(ds: Dataset) -> None:
    """Native big endian pixel data in little endian, so the encoders can read it."""
    array = ds.pixel_array
    ds.PixelData = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) == 8 else "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def encode_frames(ds: Dataset, numbers: Sequence[int], syntax: str) -> list[bytes]:
    """Frames (numbered from 1) each encoded as a *syntax* bitstream, for WADO-RS frames.

    Raises
    ------
    TranscodeError
        When the image cannot be encoded in *syntax*.
    """
    check_image(ds, syntax)
    if "PixelData" not in ds:
        raise TranscodeError("the instance has no pixel data")
    encoder = get_encoder(syntax)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    stored = ds.file_meta.TransferSyntaxUID
    if stored.is_compressed and photometric.startswith("YBR"):
        photometric = "RGB"  # the decoders give RGB
    try:
        decoder = get_decoder(stored)
    except NotImplementedError:
        raise TranscodeError(f"frames stored as {stored.name} cannot be decoded") from None
    description = {
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "samples_per_pixel": int(ds.get("SamplesPerPixel", 1) or 1),
        "bits_allocated": int(ds.BitsAllocated),
        "bits_stored": int(ds.get("BitsStored", ds.BitsAllocated)),
        "pixel_representation": int(ds.get("PixelRepresentation", 0) or 0),
        "photometric_interpretation": photometric,
        "number_of_frames": 1,
        "planar_configuration": 0,
    }
    out: list[bytes] = []
    for number in numbers:
        try:
            frame, _ = decoder.as_array(ds, index=number - 1)
        except Exception as exc:  # decoders raise many kinds
            raise TranscodeError(f"cannot decode frame {number}: {_first_line(exc)}") from None
        try:
            out.append(
                encoder.encode(
                    np.ascontiguousarray(frame), **description, **LOSSY_OPTIONS.get(syntax, {})
                )
            )
        except Exception as exc:  # encoders raise many kinds
            raise TranscodeError(
                f"cannot encode frame {number} as {UID(syntax).name}: {_first_line(exc)}"
            ) from None
    return out


def frame_target(media_type: str, syntax: str | None, *, allow_lossy: bool) -> str | None:
    """The syntax to encode frames in for an Accept entry like ``image/jls``, or None.

    Raises
    ------
    TranscodeError
        For a lossy syntax when lossy transcoding is off, or a syntax that does not belong to
        the media type.
    """
    default = FRAME_TYPE_DEFAULTS.get(media_type)
    if default is None:
        return None
    if syntax in (None, "", "*"):
        return default
    family = {JPEGLSLossless: "image/jls", JPEGLSNearLossless: "image/jls"}
    family.update(
        {JPEG2000Lossless: "image/jp2", JPEG2000: "image/jp2", RLELossless: "image/dicom-rle"}
    )
    if family.get(syntax) != media_type:
        raise TranscodeError(
            f"{media_type} frames cannot be given as transfer syntax {syntax}; ask for {default}"
        )
    if syntax in LOSSY_TARGETS and not allow_lossy:
        raise TranscodeError(
            f"{UID(syntax).name} is lossy and lossy transcoding is off "
            f"(VESALIUS_TRANSCODE_LOSSY); ask for {default}"
        )
    return syntax


STORAGE_SYNTAXES: tuple[str, ...] = (ExplicitVRLittleEndian, *LOSSLESS_TARGETS)


def for_storage(data: bytes, syntax: str | None) -> bytes:
    """A received Part 10 file in the archive's storage syntax (``storage_transfer_syntax``).

    *None* keeps every file exactly as received. Otherwise an image in another syntax is
    re-encoded losslessly (a compressed one is decoded first); a file without pixel data, one
    already in *syntax*, or one the encoder cannot take is kept as received, so that the
    setting never costs an instance. Malformed files are returned unchanged for the archive's
    own checks to refuse.
    """
    if syntax is None:
        return data
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(io.BytesIO(data))
        stored = str(ds.file_meta.TransferSyntaxUID)
    except (InvalidDicomError, AttributeError, ValueError, EOFError, OSError):
        return data
    if stored == syntax or "PixelData" not in ds:
        return data
    try:
        if syntax == ExplicitVRLittleEndian:
            if UID(stored).is_compressed:
                ds.decompress(generate_instance_uid=False)
            else:
                return data  # already uncompressed (implicit or big endian): kept as sent
        else:
            encode_dataset(ds, syntax)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except Exception as exc:
        log.info("kept as received (%s): cannot store as %s: %s", stored, UID(syntax).name, exc)
        return data
    return buffer.getvalue()
