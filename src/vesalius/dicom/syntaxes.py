"""Transfer syntaxes Vesalius accepts, and converting a stored file for a peer that needs another.

Files are stored as they arrived. When a peer cannot take the stored syntax, uncompressed
syntaxes are converted into each other and compressed ones are decoded (pylibjpeg, Pillow) to
explicit or implicit VR little endian; a peer that accepts only compressed syntaxes gets one
encoded by :mod:`vesalius.dicom.transcode` (lossless unless lossy transcoding is allowed).
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping
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

from vesalius.dicom.transcode import TranscodeError, choose_syntax, encode_dataset, targets

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "UNCOMPRESSED",
    "TranscodeError",
    "move_proposal",
    "read_for",
]

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


def is_uncompressed(syntax: str) -> bool:
    return syntax in UNCOMPRESSED


def read_for(
    source: BinaryIO | bytes, stored: str, accepted: Collection[str], *, allow_lossy: bool = False
) -> Dataset:
    """The dataset of a stored file, ready to send to a peer that accepts *accepted*.

    As stored when accepted; else a compressed dataset is decoded to explicit VR little
    endian when the peer takes uncompressed (the DIMSE layer converts between explicit and
    implicit VR little endian itself, so the dataset keeps the encoding it was read in);
    else it is encoded in a compressed syntax the peer accepts (:mod:`vesalius.dicom.transcode`).

    Raises
    ------
    TranscodeError
        When no accepted syntax can be produced for this image; the message says why.
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    ds = dcmread(fp)
    target = choose_syntax(stored, accepted, allow_lossy=allow_lossy)
    if target == stored:
        return ds
    if target in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        if not is_uncompressed(stored) and "PixelData" in ds:
            try:
                ds.decompress(generate_instance_uid=False)  # to explicit VR little endian
            except Exception as exc:  # decoders raise many kinds
                raise TranscodeError(f"cannot decode {UID(stored).name}: {exc}") from None
        return ds
    return encode_dataset(ds, target)


def move_proposal(
    stored_by_class: Mapping[str, Collection[str]], *, allow_lossy: bool = False
) -> list[tuple[str, list[str]]]:
    """The (SOP class, transfer syntaxes) contexts to propose when sending instances out.

    Per SOP class: each stored compressed syntax alone, uncompressed little endian, and each
    compressed syntax Vesalius can encode alone (so a peer that takes only JPEG-LS or only
    JPEG 2000 still gets the instances), in that order of preference.
    """
    contexts: list[tuple[str, list[str]]] = []
    for sop_class, stored in sorted(stored_by_class.items()):
        compressed = sorted(set(stored) - {ExplicitVRLittleEndian, ImplicitVRLittleEndian})
        for syntax in compressed:
            contexts.append((sop_class, [syntax]))
        contexts.append((sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
        for syntax in targets(allow_lossy):
            if syntax not in compressed:
                contexts.append((sop_class, [syntax]))
    return contexts
