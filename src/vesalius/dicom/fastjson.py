"""A fast DICOM JSON encoder for the ingest path.

pydicom's ``Dataset.to_json_dict`` builds a full ``DataElement`` for every attribute, which
costs about 25 µs each: 4 ms for a typical CT header, more than the whole rest of a store. This
encoder reads the raw values directly for the common VRs and hands everything unusual
(other character sets, implicit VR private tags, UN) to pydicom, so its output is the same as
pydicom's; the tests compare both on pydicom's own test files.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement

BulkHandler = Callable[[DataElement], str]

PLAIN_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6"})
# Text VRs pydicom decodes with its default encoding, whatever the character set says.
_DEFAULT_ENCODED = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
_TEXT_MULTI = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI"})
_TEXT_SINGLE = frozenset({"LT", "ST", "UT", "UR"})
_BINARY = frozenset({"OB", "OW", "OF", "OD", "OL", "OV"})
_NUMBERS = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "FL": "f",
    "FD": "d",
    "UV": "Q",
    "SV": "q",
}
_SIZES = {code: struct.calcsize("<" + code) for code in _NUMBERS.values()}  # standard sizes
_IS = re.compile(r"[+-]?[0-9]+")
_DS = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INFINITIES = (float("inf"), float("-inf"))


class Fallback(Exception):
    """This value needs pydicom's full conversion (the fast one might differ from it)."""


def charset_encoding(value: bytes) -> str | None:
    """The codec of a raw Specific Character Set value, or None when it is not a plain one
    (several values, or any character set but ASCII, Latin-1 and UTF-8)."""
    text = value.decode("ascii", "replace").strip(" \0")
    if "\\" in text or text not in PLAIN_CHARSETS:
        return None
    return "utf-8" if text == "ISO_IR 192" else "latin-1"


def _encoding_of(ds: Dataset, inherited: str) -> str:
    raw = ds.get_item(0x00080005) if 0x00080005 in ds else None
    if raw is None:
        return inherited
    value = raw.value
    if isinstance(value, bytes):
        return charset_encoding(value) or "pydicom"
    if isinstance(value, list | tuple):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value or "").strip()
    if "\\" in text or text not in PLAIN_CHARSETS:
        return "pydicom"
    return "utf-8" if text == "ISO_IR 192" else "latin-1"


def dataset_json(
    ds: Dataset,
    threshold: int,
    bulk: BulkHandler,
    *,
    encoding: str = "latin-1",
    little: bool | None = None,
) -> dict[str, Any]:
    """DICOM JSON of *ds*, identical to ``ds.to_json_dict(threshold, bulk)``."""
    encoding = _encoding_of(ds, encoding)
    if encoding == "pydicom":
        return ds.to_json_dict(threshold, bulk)  # type: ignore[no-any-return]
    if little is None:
        little = ds.is_little_endian if ds.is_little_endian is not None else True

    def bulk_of(tag: int) -> str:
        return bulk(ds[tag])

    out: dict[str, Any] = {}
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset converts every element)
        raw = ds.get_item(tag)
        key = f"{int(tag):08X}"
        try:
            if not isinstance(raw, RawDataElement) or raw.VR is None:
                raise Fallback
            if raw.VR == "SQ":
                out[key] = {
                    "vr": "SQ",
                    "Value": [
                        dataset_json(i, threshold, bulk, encoding=encoding, little=little)
                        for i in ds[tag].value
                    ],
                }
            else:
                out[key] = value_json(
                    raw.VR,
                    raw.value or b"",
                    encoding=encoding,
                    little=little,
                    threshold=threshold,
                    bulk=bulk_of,
                    tag=int(tag),
                )
        except Fallback:
            out[key] = ds[tag].to_json_dict(bulk, threshold)
    return out


def value_json(
    vr: str,
    value: bytes,
    *,
    encoding: str,
    little: bool,
    threshold: int,
    bulk: Callable[[int], str],
    tag: int,
) -> dict[str, Any]:
    """The DICOM JSON of one element other than a sequence, from its raw *value*.

    *encoding* is the codec of the data set's (plain) character set, see
    :func:`charset_encoding`; *bulk* gives the ``BulkDataURI`` of the element *tag* when its
    binary value is too large to be inline. The result is what pydicom's
    ``DataElement.to_json_dict(bulk, threshold)`` gives.

    Raises
    ------
    Fallback
        When the value is anything but plain, so that it might convert differently.
    """
    try:
        return _value_json(vr, value, encoding, little, threshold, bulk, tag)
    except (ValueError, UnicodeDecodeError, struct.error):
        raise Fallback from None


def _value_json(
    vr: str,
    value: bytes,
    encoding: str,
    little: bool,
    threshold: int,
    bulk: Callable[[int], str],
    tag: int,
) -> dict[str, Any]:
    item: dict[str, Any] = {"vr": vr}
    if not value:
        if vr in _NUMBERS or vr in _BINARY or vr == "AT" or vr in _TEXT_MULTI:
            return item
        if vr in _TEXT_SINGLE or vr in ("PN", "IS", "DS"):
            return item
        raise Fallback
    if vr in _TEXT_MULTI:
        if vr in _DEFAULT_ENCODED:
            if not value.isascii():
                raise Fallback
        elif b"\x1b" in value:
            raise Fallback  # escape sequences: pydicom switches character sets
        if b"\0" in value.rstrip(b" \0" if vr == "UI" else b" "):
            raise Fallback
        text = value.decode(encoding).rstrip(" \0" if vr == "UI" else " ")
        parts = text.split("\\")
        if len(parts) == 1 and not parts[0]:
            return item
        for part in parts:
            # pydicom's handling of empty components and of padding inside values differs
            # by VR (a UID drops any white space around it, an AE spaces, a CS none)
            if not part or part != part.strip():
                raise Fallback
        item["Value"] = parts
    elif vr in _TEXT_SINGLE:
        if vr == "UR":
            if not value.isascii():
                raise Fallback
            text = value.decode("ascii").rstrip()
        else:
            if b"\x1b" in value:
                raise Fallback
            text = value.decode(encoding).rstrip(" \0")
        if not text:
            return item
        if "\0" in text:
            raise Fallback
        item["Value"] = [text]
    elif vr == "PN":
        if b"\x1b" in value:
            raise Fallback
        text = value.rstrip(b" \0").decode(encoding)
        if not text:
            return item
        names = []
        for name in text.split("\\"):
            if not name or "=" in name or "\0" in name or name != name.strip():
                raise Fallback
            names.append({"Alphabetic": name})
        item["Value"] = names
    elif vr in ("IS", "DS"):
        parts = value.decode("ascii").split("\\")
        parts = [p.strip(" \0") for p in parts]
        if len(parts) == 1 and not parts[0]:
            return item
        pattern = _IS if vr == "IS" else _DS
        if any(not pattern.fullmatch(p) for p in parts):
            raise Fallback
        if vr == "IS":
            item["Value"] = [int(p) for p in parts]
        else:
            numbers = [float(p) for p in parts]
            if any(n in _INFINITIES for n in numbers):
                raise Fallback
            item["Value"] = numbers
    elif vr in _NUMBERS:
        code = _NUMBERS[vr]
        size = _SIZES[code]
        if len(value) % size:
            raise Fallback
        count = len(value) // size
        numbers = struct.unpack(f"{'<' if little else '>'}{count}{code}", value)
        if vr in ("FL", "FD") and any(n != n or n in _INFINITIES for n in numbers):
            raise Fallback
        item["Value"] = list(numbers)
    elif vr == "AT":
        if len(value) % 4:
            raise Fallback
        fmt = "<" if little else ">"
        tags = []
        for i in range(0, len(value), 4):
            group, elem = struct.unpack(f"{fmt}HH", value[i : i + 4])
            tags.append(f"{group:04X}{elem:04X}")
        item["Value"] = tags
    elif vr in _BINARY:
        if len(value) > threshold:
            item["BulkDataURI"] = bulk(tag)
        elif len(value) > threshold // 4 * 3:
            raise Fallback  # pydicom makes bulk data of anything whose base64 exceeds it
        else:
            item["InlineBinary"] = base64.b64encode(value).decode("ascii")
    else:
        raise Fallback
    return item
