"""Reading and checking an incoming DICOM file before anything is stored.

Every protocol hands the archive what it received (a DICOM Part 10 file, in a spool on disk or
as bytes); this module decides whether it can be archived and says why not in words the sender
can act on. Only what indexing needs is read: parsing stops before the pixel data, whose
declared length is checked against the image description and the file's size instead.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import Dataset, dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from vesalius.dicom.dicomjson import BULK_PREFIX, DicomJson, dataset_to_json
from vesalius.errors import InvalidInstance
from vesalius.storage.spool import Spool

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_LENIENT_UID = re.compile(r"^[0-9.]{1,64}$")

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")

_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_PIXEL_TAGS = {0x7FE00008: "OF", 0x7FE00009: "OD", 0x7FE00010: "OW"}
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_LONG_VRS |= {b"UV"}

# Elements whose VR decides how they are read and served: a UID must be UI (clients expect a
# string), the character set CS. UN is allowed (pydicom reads it with the dictionary's VR).
_EXPECTED_VR = {
    0x00080016: "UI",  # SOP Class UID
    0x00080018: "UI",  # SOP Instance UID
    0x0020000D: "UI",  # Study Instance UID
    0x0020000E: "UI",  # Series Instance UID
    0x00080005: "CS",  # Specific Character Set
}
_EXPECTED_META_VR = {
    0x00020002: "UI",  # Media Storage SOP Class UID
    0x00020003: "UI",  # Media Storage SOP Instance UID
    0x00020010: "UI",  # Transfer Syntax UID
}

# What pydicom raises on undecodable input; all of it is the sender's fault.
_DECODE_ERRORS = (
    InvalidDicomError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    OverflowError,
    NotImplementedError,
    struct.error,
)


@dataclass
class ParsedInstance:
    """A checked incoming instance: its dataset (without pixel data) and its JSON."""

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

    @property
    def uids(self) -> tuple[str, str, str, str]:
        """SOP class, SOP instance, study and series UIDs."""
        return (
            self.sop_class_uid,
            self.sop_instance_uid,
            self.study_instance_uid,
            self.series_instance_uid,
        )


def is_valid_uid(value: str) -> bool:
    """A UID as PS3.5 9.1 allows it: digits and dots, no leading zeros, at most 64 chars."""
    return 0 < len(value) <= 64 and bool(_UID.match(value))


PREAMBLE_BYTES = 132


def needs_preamble(head: bytes) -> bool:
    """Whether a Part 10 stream starting with *head* (at least 132 bytes, or all of it) lacks
    the preamble and ``DICM`` prefix (see :func:`with_preamble`)."""
    return head[128:132] != b"DICM" and head.startswith(b"\x02\x00")


def with_preamble(data: bytes) -> bytes:
    """A Part 10 stream given the 128-byte preamble and ``DICM`` prefix when it lacks them.

    ``pydicom.dcmwrite`` leaves them out for a dataset built in memory, so clients such as
    dicomweb-client send such files: a stream that starts with a file meta element (group
    0002) gets them, and is stored with them.
    """
    if not needs_preamble(data):
        return data
    return b"\x00" * 128 + b"DICM" + data


class Part10Writer:
    """Writes a received Part 10 stream into a spool, adding the preamble when it lacks one.

    Holds back only the first 132 bytes until it can tell; call :meth:`close` at the end.
    """

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._head: bytearray | None = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is None:
            self.spool.write(data)
            return
        self._head += data
        if len(self._head) >= PREAMBLE_BYTES:
            self._flush_head()

    def _flush_head(self) -> None:
        head, self._head = self._head, None
        if head is None:
            return
        if needs_preamble(head):
            self.spool.write(b"\x00" * 128 + b"DICM")
        self.spool.write(head)

    def close(self) -> None:
        self._flush_head()


def write_spool(spool: Spool, data: bytes | bytearray | memoryview) -> None:
    """Write a whole received file into *spool* (the preamble added when it lacks one)."""
    writer = Part10Writer(spool)
    writer.write(data)
    writer.close()


def parse_instance(data: bytes) -> ParsedInstance:
    """Parse a DICOM Part 10 file held in memory and check it can be archived.

    Raises
    ------
    InvalidInstance
        With the reason: not DICOM, truncated, a required UID missing or malformed.
    """
    data = with_preamble(data)
    return _parse(io.BytesIO(data), len(data))


def parse_file(path: Path, size: int | None = None) -> ParsedInstance:
    """Parse a DICOM Part 10 file on disk, reading only up to its pixel data."""
    with open(path, "rb", buffering=65536) as fh:
        if size is None:
            size = fh.seek(0, io.SEEK_END)
            fh.seek(0)
        return _parse(fh, size)


def parse_spool(spool: Spool) -> ParsedInstance:
    """Parse what was written into *spool* (see :func:`parse_file`)."""
    return parse_file(spool.path, spool.size)


def _parse(fp: BinaryIO, size: int) -> ParsedInstance:
    try:
        return _parse_checked(fp, size)
    except InvalidInstance:
        raise
    except _DECODE_ERRORS as exc:
        raise InvalidInstance(f"an element cannot be decoded: {exc}") from None


def _parse_checked(fp: BinaryIO, size: int) -> ParsedInstance:
    try:
        ds = dcmread(fp, stop_before_pixels=True)
    except NotImplementedError as exc:  # an unknown VR pydicom needed to read on
        raise InvalidInstance(f"an element cannot be decoded: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise InvalidInstance(f"not a readable DICOM file: {exc}") from None
    except OSError as exc:
        if isinstance(fp, io.BytesIO):
            raise InvalidInstance(f"not a readable DICOM file: {exc}") from None
        raise
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        raise InvalidInstance("the file has no Transfer Syntax UID (0002,0010) in its meta header")
    pixel: tuple[int, str, int, int] | None = None
    if syntax == DeflatedExplicitVRLittleEndian:
        # pydicom inflates the whole rest of the file itself; read it all (rare syntax)
        fp.seek(0)
        ds = dcmread(fp)
    else:
        at = fp.tell()
        if at < size:
            pixel = _pixel_element(fp, at, ds)
    _check_vrs(ds)
    _check_complete(ds)
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
    if pixel is not None:
        tag, vr, length, value_at = pixel
        _check_pixel_length(ds, tag, length, size - value_at)
        json[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": f"{BULK_PREFIX}{tag:08X}"}
    elif _PIXEL_DATA in ds:
        _check_pixel_data(ds, len(ds.get_item(_PIXEL_DATA).value or b""))
    return ParsedInstance(dataset=ds, json=json, transfer_syntax_uid=str(syntax))


def _pixel_element(fp: BinaryIO, at: int, ds: Dataset) -> tuple[int, str, int, int] | None:
    """The (tag, VR, declared length, value offset) of the pixel data element at *at*."""
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return None
    fp.seek(at)
    head = fp.read(12)
    if len(head) < 8:
        raise InvalidInstance(f"the file is truncated inside the pixel data header at {at}")
    endian = "<" if little else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    tag = (group << 16) | elem
    if tag not in _PIXEL_TAGS:
        return None
    if implicit:
        vr = _PIXEL_TAGS[tag]
        if tag == _PIXEL_DATA and int(ds.get("BitsAllocated", 16) or 16) <= 8:
            vr = "OB"
        (length,) = struct.unpack(endian + "I", head[4:8])
        return tag, vr, length, at + 8
    raw_vr = head[4:6]
    if raw_vr in _LONG_VRS:
        if len(head) < 12:
            raise InvalidInstance(f"the file is truncated inside the pixel data header at {at}")
        (length,) = struct.unpack(endian + "I", head[8:12])
        value_at = at + 12
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
        value_at = at + 8
    vr = raw_vr.decode("latin-1")
    if vr not in ("OB", "OW", "OF", "OD", "UN"):
        raise InvalidInstance(f"the pixel data element {Tag(tag)} has VR {vr!r}, not OB or OW")
    return tag, vr, length, value_at


def _check_pixel_length(ds: Dataset, tag: int, length: int, available: int) -> None:
    if length == _UNDEFINED:
        if not ds.file_meta.TransferSyntaxUID.is_compressed and tag == _PIXEL_DATA:
            raise InvalidInstance(
                "native pixel data with an undefined length: only compressed (encapsulated) "
                "pixel data may have one"
            )
        return  # encapsulated fragments: not read here
    if length > available:
        raise InvalidInstance(
            f"the file is truncated: element {Tag(tag)} declares {length} bytes "
            f"but only {max(available, 0)} follow"
        )
    if tag == _PIXEL_DATA:
        _check_pixel_data(ds, length)


def _check_vrs(ds: Dataset) -> None:
    """Refuse required UIDs and the character set carried with another or an unknown VR."""
    implicit, _little = ds.original_encoding
    meta = getattr(ds, "file_meta", None)
    groups = [(ds, _EXPECTED_VR, implicit)]
    if meta is not None:
        groups.append((meta, _EXPECTED_META_VR, False))
    for dataset, expected, is_implicit in groups:
        for tag, want in expected.items():
            if tag not in dataset:
                continue
            raw = dataset.get_item(tag)
            vr = raw.VR if isinstance(raw, RawDataElement) else None
            if isinstance(raw, RawDataElement) and vr is None and not is_implicit:
                raise InvalidInstance(
                    f"{keyword_for_tag(tag)} {Tag(tag)} is encoded with bytes that are no VR"
                )
            if vr is not None and vr not in (want, "UN"):
                printable = vr if vr.isprintable() else repr(vr)
                raise InvalidInstance(
                    f"{keyword_for_tag(tag)} {Tag(tag)} is encoded with VR {printable}; "
                    f"it must be {want}"
                )


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


def _check_pixel_data(ds: Dataset, actual: int) -> None:
    """Refuse native pixel data of *actual* bytes, shorter than its image description says."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
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
    if actual < expected:
        raise InvalidInstance(
            f"the pixel data is truncated: {actual} bytes for {frames} frame(s) of "
            f"{rows}x{columns}x{samples} at {bits} bits ({expected} bytes expected)"
        )
