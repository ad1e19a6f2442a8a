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
from typing import Any, BinaryIO

from pydicom import Dataset, dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from vesalius.dicom.dicomjson import (
    BULK_DATA_THRESHOLD,
    BULK_PREFIX,
    DicomJson,
    dataset_to_json,
    tag_key,
)
from vesalius.dicom.rawscan import NeedMore, Unusual, scan
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


@dataclass(frozen=True, slots=True)
class ParsedInstance:
    """A checked incoming instance: its DICOM JSON (pixel data as a bulk data URI), its
    transfer syntax and the UIDs it is filed under."""

    json: DicomJson
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str

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
    try:
        return _parse_fast(data, True, len(data))
    except _NOT_FAST:
        pass  # the pydicom path decides, and words any refusal
    return _parse(io.BytesIO(data), len(data))


# The fast path leaves to the pydicom path: what it does not read exactly like pydicom
# (Unusual, NeedMore), any refusal (the pydicom path words it), and should it have a bug,
# anything else: a file is never refused, nor read differently, because of the fast path.
_NOT_FAST = Exception

# How much of a file the fast path reads first, and at most: a header rarely needs more.
_HEAD_BYTES = 64 * 1024
_MAX_HEAD_BYTES = 4 * 1024 * 1024


def parse_file(path: Path, size: int | None = None) -> ParsedInstance:
    """Parse a DICOM Part 10 file on disk, reading only up to its pixel data."""
    with open(path, "rb", buffering=0) as fh:
        if size is None:
            size = fh.seek(0, io.SEEK_END)
            fh.seek(0)
        want = _HEAD_BYTES
        head = fh.read(want)
        while True:
            try:
                return _parse_fast(head, len(head) < want, size)
            except NeedMore:
                if want >= _MAX_HEAD_BYTES:
                    break
                head += fh.read(_MAX_HEAD_BYTES - want)
                want = _MAX_HEAD_BYTES
            except _NOT_FAST:
                break
        fh.seek(0)
        return _parse(io.BufferedReader(fh, 65536), size)


def parse_spool(spool: Spool) -> ParsedInstance:
    """Parse what was written into *spool* (see :func:`parse_file`)."""
    return parse_file(spool.path, spool.size)


def _bulk_uri(tag: int) -> str:
    return f"{BULK_PREFIX}{tag:08X}"


def _parse_fast(data: bytes, complete: bool, size: int) -> ParsedInstance:
    """The plain case, read without pydicom (see :mod:`vesalius.dicom.rawscan`).

    Raises :class:`Unusual`, :class:`NeedMore` or :class:`InvalidInstance` (a refusal, which
    the pydicom path words) whenever the pydicom path must decide.
    """
    scanned = scan(data, complete=complete, threshold=BULK_DATA_THRESHOLD, bulk=_bulk_uri)
    json = scanned.json
    for group, expected in ((json, _EXPECTED_VR), (scanned.meta, _EXPECTED_META_VR)):
        for tag, want in expected.items():
            item = group.get(f"{tag:08X}")
            if item is not None and item["vr"] != want:
                raise Unusual(f"{tag:08X} has VR {item['vr']}")
    uids = [_single_string(json, keyword) for keyword in REQUIRED_UIDS]
    _check_uids(uids, _single_string(scanned.meta, "MediaStorageSOPInstanceUID"))
    if scanned.pixel_tag is not None:
        tag = scanned.pixel_tag
        vr = _pixel_vr(tag, scanned.pixel_vr, json)
        available = size - scanned.pixel_offset
        syntax = UID(scanned.transfer_syntax_uid)
        _check_pixel_length(json, syntax, tag, scanned.pixel_length, available)
        json[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": _bulk_uri(tag)}
    return ParsedInstance(json, scanned.transfer_syntax_uid, *uids)


def _single_string(json: DicomJson, keyword: str) -> str:
    """The value of a string element as pydicom's ``str(ds.get(keyword, "") or "")`` gives
    it (an element with several values is left to the pydicom path)."""
    item = json.get(tag_key(keyword))
    values = item.get("Value") if item is not None else None
    if not values:
        return ""
    if len(values) != 1 or not isinstance(values[0], str):
        raise Unusual(f"{keyword} has several values")
    return values[0]


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
    pixel: tuple[int, str | None, int, int] | None = None
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
    uids = [str(ds.get(keyword, "") or "") for keyword in REQUIRED_UIDS]
    _check_uids(uids, str(meta.get("MediaStorageSOPInstanceUID", "") or ""))
    try:
        json = dataset_to_json(ds)
    except Exception as exc:  # pydicom raises many kinds on malformed values
        raise InvalidInstance(f"an element cannot be decoded: {exc}") from None
    if pixel is not None:
        tag, raw_vr, length, value_at = pixel
        vr = _pixel_vr(tag, raw_vr, json)
        _check_pixel_length(json, syntax, tag, length, size - value_at)
        json[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": f"{BULK_PREFIX}{tag:08X}"}
    elif _PIXEL_DATA in ds:
        _check_pixel_data(json, syntax, len(ds.get_item(_PIXEL_DATA).value or b""))
    return ParsedInstance(json, str(syntax), *uids)


def _check_uids(uids: list[str], meta_sop: str) -> None:
    """Refuse required UIDs (in the order of ``REQUIRED_UIDS``) missing or malformed, and a
    meta header naming another SOP instance."""
    for keyword, uid in zip(REQUIRED_UIDS, uids, strict=True):
        value = uid.strip()
        if not value:
            raise InvalidInstance(f"{keyword} is missing or empty")
        if not _LENIENT_UID.match(value):
            raise InvalidInstance(f"{keyword} {value[:80]!r} is not a valid UID")
    sop = uids[1]
    if meta_sop and meta_sop != sop:
        raise InvalidInstance(
            f"the meta header's SOP Instance UID {meta_sop} differs from the dataset's {sop}"
        )


def _pixel_element(fp: BinaryIO, at: int, ds: Dataset) -> tuple[int, str | None, int, int] | None:
    """The (tag, explicit VR or None, declared length, value offset) of the pixel data
    element at *at*."""
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
        (length,) = struct.unpack(endian + "I", head[4:8])
        return tag, None, length, at + 8
    raw_vr = head[4:6]
    if raw_vr in _LONG_VRS:
        if len(head) < 12:
            raise InvalidInstance(f"the file is truncated inside the pixel data header at {at}")
        (length,) = struct.unpack(endian + "I", head[8:12])
        value_at = at + 12
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
        value_at = at + 8
    return tag, raw_vr.decode("latin-1"), length, value_at


def _pixel_vr(tag: int, explicit_vr: str | None, json: DicomJson) -> str:
    """The VR the pixel data element *tag* is served with: as written in explicit VR (one
    of the binary VRs), from the image description in implicit VR."""
    if explicit_vr is None:
        vr = _PIXEL_TAGS[tag]
        if tag == _PIXEL_DATA and int(_json_value(json, "BitsAllocated", 16) or 16) <= 8:
            vr = "OB"
        return vr
    if explicit_vr not in ("OB", "OW", "OF", "OD", "UN"):
        raise InvalidInstance(
            f"the pixel data element {Tag(tag)} has VR {explicit_vr!r}, not OB or OW"
        )
    return explicit_vr


def _json_value(json: DicomJson, keyword: str, default: Any) -> Any:
    """The value of an element as ``ds.get(keyword, default)`` gives it: *default* when
    absent, None when empty, the value when single, the list of values when several."""
    item = json.get(tag_key(keyword))
    if item is None:
        return default
    values = item.get("Value")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _check_pixel_length(
    json: DicomJson, syntax: UID, tag: int, length: int, available: int
) -> None:
    if length == _UNDEFINED:
        if not syntax.is_compressed and tag == _PIXEL_DATA:
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
        _check_pixel_data(json, syntax, length)


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


def _check_pixel_data(json: DicomJson, syntax: UID, actual: int) -> None:
    """Refuse native pixel data of *actual* bytes, shorter than its image description says."""
    if syntax.is_compressed:
        return
    try:
        rows = int(_json_value(json, "Rows", None))
        columns = int(_json_value(json, "Columns", None))
        bits = int(_json_value(json, "BitsAllocated", None))
        samples = int(_json_value(json, "SamplesPerPixel", 1) or 1)
        frames = int(_json_value(json, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
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
