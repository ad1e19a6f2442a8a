"""Reading and checking an incoming DICOM file before anything is stored.

Every protocol hands the archive the bytes it received (a DICOM Part 10 file); this module
decides whether they can be archived and says why not in words the sender can act on.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from vesalius.dicom.dicomjson import DicomJson, dataset_to_json
from vesalius.errors import InvalidInstance

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_LENIENT_UID = re.compile(r"^[0-9.]{1,64}$")

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")

_PIXEL_DATA = Tag(0x7FE0, 0x0010)


@dataclass
class ParsedInstance:
    """A checked incoming instance: its dataset, JSON and the bytes to store as they are."""

    data: bytes
    dataset: Dataset
    json: DicomJson
    transfer_syntax_uid: str

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)


def is_valid_uid(value: str) -> bool:
    """A UID as PS3.5 9.1 allows it: digits and dots, no leading zeros, at most 64 chars."""
    return 0 < len(value) <= 64 and bool(_UID.match(value))


def with_preamble(data: bytes) -> bytes:
    """A Part 10 stream given the 128-byte preamble and ``DICM`` prefix when it lacks them.

    ``pydicom.dcmwrite`` leaves them out for a dataset built in memory, so clients such as
    dicomweb-client send such files: a stream that starts with a file meta element (group
    0002) gets them, and is stored with them.
    """
    if data[128:132] == b"DICM" or not data.startswith(b"\x02\x00"):
        return data
    return b"\x00" * 128 + b"DICM" + data


def parse_instance(data: bytes) -> ParsedInstance:
    """Parse a DICOM Part 10 file and check it can be archived.

    Raises
    ------
    InvalidInstance
        With the reason: not DICOM, truncated, a required UID missing or malformed.
    """
    data = with_preamble(data)
    try:
        ds = dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError) as exc:
        raise InvalidInstance(f"not a readable DICOM file: {exc}") from None
    _check_complete(ds)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise InvalidInstance("the file has no Transfer Syntax UID (0002,0010) in its meta header")
    for keyword in REQUIRED_UIDS:
        value = str(ds.get(keyword, "") or "").strip()
        if not value:
            raise InvalidInstance(f"{keyword} is missing or empty")
        if not _LENIENT_UID.match(value):
            raise InvalidInstance(f"{keyword} {value[:80]!r} is not a valid UID")
    meta_sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
    if meta_sop and meta_sop != str(ds.SOPInstanceUID):
        raise InvalidInstance(
            f"the meta header's SOP Instance UID {meta_sop} differs from the dataset's "
            f"{ds.SOPInstanceUID}"
        )
    try:
        json = dataset_to_json(ds)
    except Exception as exc:  # pydicom raises many kinds on malformed values
        raise InvalidInstance(f"an element cannot be decoded: {exc}") from None
    _check_pixel_data(ds)
    return ParsedInstance(data=data, dataset=ds, json=json, transfer_syntax_uid=str(syntax))


def _check_complete(ds: Dataset) -> None:
    """Refuse a dataset whose last element is shorter than its declared length."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.value is not None:
            length = raw.length
            if length != 0xFFFFFFFF and len(raw.value) < length:
                raise InvalidInstance(
                    f"the file is truncated: element {Tag(tag)} declares {length} bytes "
                    f"but only {len(raw.value)} follow"
                )


def _check_pixel_data(ds: Dataset) -> None:
    """Refuse native pixel data shorter than its image description says."""
    if _PIXEL_DATA not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise InvalidInstance(
            "pixel data without a usable image description (Rows, Columns, BitsAllocated)"
        ) from None
    expected = rows * columns * samples * frames * bits
    expected = (expected + 7) // 8
    actual = len(ds.get_item(_PIXEL_DATA).value or b"")
    if actual < expected:
        raise InvalidInstance(
            f"the pixel data is truncated: {actual} bytes for {frames} frame(s) of "
            f"{rows}x{columns}x{samples} at {bits} bits ({expected} bytes expected)"
        )
