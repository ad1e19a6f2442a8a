"""A strict scanner of the raw bytes of a DICOM Part 10 file, for the ingest path.

``pydicom.dcmread`` plus the conversion of its elements costs about a millisecond of CPU for a
CT header, the largest single item of a store. Most files that arrive are plain: preamble,
explicit VR little endian file meta, then a little endian data set (explicit or implicit VR)
of well-formed elements, in ascending order, ending with the pixel data. :func:`scan` reads
exactly those, turning each value into its DICOM JSON with the same code as the pydicom path
(:func:`vesalius.dicom.fastjson.value_json`), and stops at the pixel data, recording where its
value starts and how long it says it is.

Anything else raises :class:`Unusual` (or :class:`NeedMore` when the bytes given end too
soon), and the caller reads the file with pydicom instead: this scanner never guesses. What
counts as unusual is whatever pydicom might read differently from a naive reading: elements
out of order or repeated, unknown or ambiguous VRs, UN, undefined lengths other than sequences
and their items, elements overrunning their item or sequence, character sets other than
ASCII, Latin-1 and UTF-8, big endian and deflated syntaxes, and any value
:func:`~vesalius.dicom.fastjson.value_json` declines.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR

from vesalius.dicom.fastjson import Fallback, charset_encoding, value_json

try:  # the plain elements in C (_rawwalk.c): a CT header in 64 µs, not 123
    from vesalius.dicom._rawwalk import walk as _walk
except ImportError:  # not built (no C compiler at install): this module reads every element
    _walk = None

__all__ = ["NeedMore", "Scanned", "Unusual", "scan"]

PREAMBLE = 132
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
UNDEFINED = 0xFFFFFFFF
_CHARSET = 0x00080005
_PIXEL_REPRESENTATION = 0x00280103
# "US or SS" in implicit VR: US when the Pixel Representation (read before them) is 0, else SS
_PIXEL_VALUE_TAGS = frozenset(
    {0x00280106, 0x00280107, 0x00280108, 0x00280109, 0x00280110, 0x00280111, 0x00280120}
    | {0x00280121}
)
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD

# Explicit VRs read here (UN is not: pydicom replaces it with the dictionary's VR).
_VRS = {vr.encode("ascii"): str(vr) for vr in STANDARD_VR if vr != "UN"}
_VR_NAMES = frozenset(_VRS.values())
_LONG = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_HEAD = struct.Struct("<HH2sH")
_IMPLICIT_HEAD = struct.Struct("<HHL")
_LENGTH32 = struct.Struct("<L")


class Unusual(Exception):
    """The file is not one this scanner reads exactly like pydicom: read it with pydicom."""


class NeedMore(Exception):
    """The bytes given end before the scan could (the file may have more)."""


@dataclass(frozen=True, slots=True)
class Scanned:
    """What :func:`scan` read: the data set's DICOM JSON up to the pixel data, the file
    meta's DICOM JSON, and where the pixel data element is.

    ``pixel_tag`` is None when the data set ends without one; ``pixel_vr`` is its explicit
    VR as written (None in implicit VR); ``pixel_offset`` is where its value starts and
    ``pixel_length`` its declared length (``UNDEFINED`` for encapsulated pixel data).
    """

    json: dict[str, Any]
    meta: dict[str, Any]
    transfer_syntax_uid: str
    implicit: bool
    pixel_tag: int | None = None
    pixel_vr: str | None = None
    pixel_offset: int = 0
    pixel_length: int = 0


def scan(
    data: bytes,
    *,
    complete: bool,
    threshold: int,
    bulk: Callable[[int], str],
) -> Scanned:
    """Scan a Part 10 file (*data*: the whole file when *complete*, else its head).

    *threshold* and *bulk* are as for :func:`~vesalius.dicom.fastjson.value_json`.

    Raises
    ------
    Unusual
        The file needs pydicom (see the module's docstring).
    NeedMore
        *data* is not *complete* and ends before the pixel data (or the end of the data set).
    """
    return _Scanner(data, complete, threshold, bulk).run()


_dictionary_vrs: dict[int, str | None] = {}
_KEYS: dict[int, str] = {}  # tag -> its JSON key, for the tags seen first
_MAX_KEYS = 20_000


def _dictionary_vr(tag: int) -> str | None:
    try:
        return _dictionary_vrs[tag]
    except KeyError:
        pass
    try:
        vr: str | None = str(dictionary_VR(tag))
    except KeyError:
        vr = None
    _dictionary_vrs[tag] = vr
    return vr


_private_vrs: dict[tuple[int, str], str] = {}


def _private_vr(tag: int, creator: str) -> str:
    """The VR of a private tag in pydicom's private dictionary, else UN."""
    key = (tag, creator)
    vr = _private_vrs.get(key)
    if vr is None:
        vr = "UN"
        with contextlib.suppress(KeyError):
            vr = str(private_dictionary_VR(tag, creator))
        if len(_private_vrs) < _MAX_KEYS:
            _private_vrs[key] = vr
    return vr


class _Scanner:
    def __init__(
        self, data: bytes, complete: bool, threshold: int, bulk: Callable[[int], str]
    ) -> None:
        self.data = data
        self.size = len(data)
        self.complete = complete
        self.threshold = threshold
        self.bulk = bulk
        self.implicit = False
        self.encoding = "latin-1"
        self.pos = 0
        self.pixel_rep: int | None = None  # the top level's Pixel Representation

    def short(self) -> Exception:
        """The exception for bytes that end too soon."""
        return Unusual("truncated") if self.complete else NeedMore()

    def run(self) -> Scanned:
        data = self.data
        if self.size < PREAMBLE:
            raise self.short()
        if data[128:132] != b"DICM":
            raise Unusual("no DICM prefix")
        meta, pos = self.meta(PREAMBLE)
        syntax_item = meta.get("00020010")
        if syntax_item is None or syntax_item["vr"] != "UI":
            raise Unusual("no transfer syntax")
        values = syntax_item.get("Value") or []
        if len(values) != 1:
            raise Unusual("no single transfer syntax")
        syntax = values[0]
        if (
            syntax in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
            or syntax in PrivateTransferSyntaxes
            or not UID(syntax).is_transfer_syntax
        ):
            raise Unusual(f"transfer syntax {syntax}")
        self.implicit = syntax == ImplicitVRLittleEndian
        out: dict[str, Any] = {}
        pixel = self.dataset(pos, None, out, top=True)
        scanned = Scanned(out, meta, syntax, self.implicit)
        if pixel is None:
            return scanned
        tag, vr, length, value_at = pixel
        return Scanned(out, meta, syntax, self.implicit, tag, vr, value_at, length)

    def meta(self, pos: int) -> tuple[dict[str, Any], int]:
        """The file meta group (explicit VR little endian) and where the data set starts."""
        data, size = self.data, self.size
        out: dict[str, Any] = {}
        last = -1
        while True:
            if _walk is not None:
                pos, last = _walk(data, pos, size, last, out, _KEYS, _MAX_KEYS, False, True)
            if pos + 8 > size:
                if pos == size and self.complete:
                    return out, pos
                raise self.short()
            group, elem, raw_vr, length = _HEAD.unpack_from(data, pos)
            if group != 2:
                if not out:
                    raise Unusual("no file meta")
                return out, pos
            tag = 0x00020000 | elem
            if tag <= last:
                raise Unusual("file meta out of order")
            last = tag
            vr = _VRS.get(raw_vr)
            if vr is None or vr == "SQ":
                raise Unusual("file meta VR")
            pos, value = self.value(pos, vr, length, size)
            out[f"{tag:08X}"] = self.convert(vr, value, tag)

    def value(self, pos: int, vr: str, length: int, end: int) -> tuple[int, bytes]:
        """The end and value of the explicit VR element at *pos*, with short *length*."""
        if vr in _LONG:
            if pos + 12 > self.size:
                raise self.short()
            (length,) = _LENGTH32.unpack_from(self.data, pos + 8)
            pos += 12
        else:
            pos += 8
        if length == UNDEFINED:
            raise Unusual("undefined length")
        stop = pos + length
        if stop > end:
            if stop > self.size and end >= self.size:
                raise self.short()
            raise Unusual("element overruns its container")
        return stop, self.data[pos:stop]

    def convert(self, vr: str, value: bytes, tag: int) -> dict[str, Any]:
        try:
            return value_json(vr, value, self.encoding, True, self.threshold, self.bulk, tag)
        except Fallback:
            raise Unusual(f"value of {tag:08X}") from None

    def dataset(
        self, pos: int, end: int | None, out: dict[str, Any], *, top: bool = False
    ) -> tuple[int, str | None, int, int] | None:
        """Read elements from *pos* into *out*: to *end*, or to an item delimiter when
        *end* is None inside a sequence, or to the end of the data or the pixel data at the
        top level. Returns the pixel data's (tag, explicit VR, length, value offset) when it
        stopped there, else None with the position after what it read in ``self.pos``."""
        data, size, implicit = self.data, self.size, self.implicit
        threshold, bulk = self.threshold, self.bulk
        # the loop runs for every element of every file stored: its names are local
        head = _IMPLICIT_HEAD.unpack_from if implicit else _HEAD.unpack_from
        vrs, long_vrs, keys, convert = _VRS, _LONG, _KEYS, value_json
        pixel_tags = PIXEL_TAGS if top else frozenset()
        limit = size if end is None else end
        last = -1
        creators: dict[int, str] = {}
        # pydicom reads a data set whose first "VR" looks like one as explicit VR
        first_vr = data[pos + 4 : pos + 6] if top and implicit else b""
        if len(first_vr) == 2 and all(0x40 < byte < 0x5B for byte in first_vr):
            raise Unusual("implicit VR data set that looks explicit")
        walk = None if implicit else _walk
        while True:
            if walk is not None:  # the plain elements from here, up to one it leaves to us
                pos, last = walk(data, pos, limit, last, out, keys, _MAX_KEYS, top, False)
            if pos == limit and end is not None:
                self.pos = pos
                return None
            if pos + 8 > limit:
                if top and pos == size and self.complete:
                    self.pos = pos
                    return None
                if pos + 8 > size:
                    raise self.short()
                raise Unusual("element overruns its container")
            if implicit:
                group, elem, length = head(data, pos)
                raw_vr = b""
            else:
                group, elem, raw_vr, length = head(data, pos)
            tag = group << 16 | elem
            if tag == _ITEM_END:
                if end is not None or top:
                    raise Unusual("stray item delimiter")
                if data[pos + 4 : pos + 8] != b"\0\0\0\0":
                    raise Unusual("item delimiter with a length")
                self.pos = pos + 8
                return None
            if tag in pixel_tags:
                return self.pixel(pos, tag, raw_vr)
            if tag <= last or group < 8 or group == 0xFFFE:
                raise Unusual(f"element {tag:08X} out of order or out of place")
            last = tag
            if implicit:
                vr = self.implicit_vr(tag, creators, top)
                value_at = pos + 8
            else:
                vr = vrs.get(raw_vr)  # type: ignore[assignment]
                if vr is None:
                    raise Unusual(f"VR {raw_vr!r} of {tag:08X}")
                if vr in long_vrs:
                    if pos + 12 > size:
                        raise self.short()
                    (length,) = _LENGTH32.unpack_from(data, pos + 8)
                    value_at = pos + 12
                else:
                    value_at = pos + 8
            if length == UNDEFINED:
                if vr != "SQ":
                    raise Unusual("undefined length")
                out[f"{tag:08X}"] = {"vr": "SQ", "Value": self.sequence(value_at, None)}
                pos = self.pos
                continue
            pos = value_at + length
            if pos > limit:
                if pos > size and limit >= size:
                    raise self.short()
                raise Unusual("element overruns its container")
            if vr == "SQ":
                out[f"{tag:08X}"] = {"vr": "SQ", "Value": self.sequence(value_at, pos)}
                continue
            value = data[value_at:pos]
            if tag == _CHARSET:
                if not top:
                    raise Unusual("character set inside a sequence item")
                encoding = charset_encoding(value)
                if encoding is None:
                    raise Unusual("character set")
                self.encoding = encoding
            try:
                if vr == "UN":  # only an implicit VR private tag pydicom does not know
                    item = convert("OB", value, self.encoding, True, threshold, bulk, tag)
                    item["vr"] = "UN"
                else:
                    item = convert(vr, value, self.encoding, True, threshold, bulk, tag)
            except Fallback:
                raise Unusual(f"value of {tag:08X}") from None
            if tag == _PIXEL_REPRESENTATION and top:
                values = item.get("Value") or []
                self.pixel_rep = values[0] if len(values) == 1 else None
            elif implicit and vr == "LO" and group & 1 and 0x10 <= elem <= 0xFF:
                creator = item.get("Value") or [""]
                if len(creator) != 1:
                    raise Unusual("private creator with several values")
                creators[tag] = creator[0]
            key = keys.get(tag)
            if key is None:
                key = f"{tag:08X}"
                if len(keys) < _MAX_KEYS:
                    keys[tag] = key
            out[key] = item

    def implicit_vr(self, tag: int, creators: dict[int, str], top: bool) -> str:
        """The VR pydicom gives an implicit VR element (see its ``raw_element_vr`` hook, and
        ``correct_ambiguous_vr_element`` for pixel values)."""
        vr = _dictionary_vr(tag)
        if vr == "US or SS" and top and tag in _PIXEL_VALUE_TAGS and self.pixel_rep is not None:
            return "US" if self.pixel_rep == 0 else "SS"
        if vr is None:
            group, elem = tag >> 16, tag & 0xFFFF
            if not group & 1:
                raise Unusual(f"unknown tag {tag:08X}")
            if 0x10 <= elem <= 0xFF:
                vr = "LO"
            else:
                creator = creators.get(group << 16 | elem >> 8) if elem & 0xFF00 else None
                vr = "UN"
                if creator:
                    vr = _private_vr(tag, creator)
        if vr not in _VR_NAMES and vr != "UN":
            raise Unusual(f"VR {vr} of {tag:08X}")  # ambiguous ("US or SS") and the like
        return vr

    def sequence(self, pos: int, end: int | None) -> list[dict[str, Any]]:
        """The items of a sequence whose value starts at *pos* and ends at *end* (None:
        undefined length, up to its delimiter); sets ``self.pos`` after it."""
        data, size = self.data, self.size
        items: list[dict[str, Any]] = []
        while True:
            if end is not None and pos == end:
                self.pos = pos
                return items
            if pos + 8 > size:
                raise self.short()
            if end is not None and pos + 8 > end:
                raise Unusual("item overruns its sequence")
            group, elem, length = _IMPLICIT_HEAD.unpack_from(data, pos)
            tag = group << 16 | elem
            pos += 8
            if tag == _SEQUENCE_END and end is None:
                if length:
                    raise Unusual("sequence delimiter with a length")
                self.pos = pos
                return items
            if tag != _ITEM:
                raise Unusual(f"{tag:08X} in a sequence")
            item: dict[str, Any] = {}
            if length == UNDEFINED:
                self.dataset(pos, None, item)
                pos = self.pos
            else:
                stop = pos + length
                if end is not None and stop > end:
                    raise Unusual("item overruns its sequence")
                if stop > size:
                    raise self.short()
                self.dataset(pos, stop, item)
                pos = stop
            if end is not None and pos > end:
                raise Unusual("item overruns its sequence")
            items.append(item)

    def pixel(self, pos: int, tag: int, raw_vr: bytes) -> tuple[int, str | None, int, int]:
        """(tag, explicit VR, declared length, value offset) of the pixel data at *pos*."""
        data = self.data
        if self.implicit:
            (length,) = _LENGTH32.unpack_from(data, pos + 4)
            return tag, None, length, pos + 8
        vr = _VRS.get(raw_vr)
        if vr is None:
            raise Unusual("pixel data VR")
        if vr in _LONG:
            if pos + 12 > self.size:
                raise self.short()
            (length,) = _LENGTH32.unpack_from(data, pos + 8)
            return tag, vr, length, pos + 12
        (length,) = struct.unpack_from("<H", data, pos + 6)
        return tag, vr, length, pos + 8
