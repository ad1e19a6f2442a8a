"""Transfer syntaxes Vesalius accepts, and converting a stored file for a peer that needs another.

Files are stored as they arrived. When a peer cannot take the stored syntax, uncompressed
syntaxes are converted into each other and compressed ones are decoded (pylibjpeg, Pillow) to
explicit or implicit VR little endian. Vesalius never re-compresses on the way out.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from typing import BinaryIO

from pydicom import Dataset, dcmread
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)

ACCEPTED_TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
]


class TranscodeError(Exception):
    """The stored file cannot be given in any syntax the peer accepts."""


def is_uncompressed(syntax: str) -> bool:
    return syntax in UNCOMPRESSED


def read_for(source: BinaryIO | bytes, stored: str, accepted: Collection[str]) -> Dataset:
    """The dataset of a stored file, ready to send to a peer that accepts *accepted*.

    A compressed dataset the peer cannot take is decoded to explicit VR little endian; the
    DIMSE layer converts between explicit and implicit VR little endian itself, so the
    dataset keeps the encoding it was read in.
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    ds = dcmread(fp)
    if stored in accepted:
        return ds
    if not (set(accepted) & {ExplicitVRLittleEndian, ImplicitVRLittleEndian}):
        raise TranscodeError(
            f"the peer accepts neither {UID(stored).name} nor little endian uncompressed"
        )
    if not is_uncompressed(stored) and "PixelData" in ds:
        try:
            ds.decompress(generate_instance_uid=False)  # to explicit VR little endian
        except Exception as exc:  # decoders raise many kinds
            raise TranscodeError(f"cannot decode {UID(stored).name}: {exc}") from None
    return ds
