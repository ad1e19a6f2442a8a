"""A fast DICOM JSON encoder for the ingest path.

pydicom's ``Dataset.to_json_dict`` builds a full ``DataElement`` for every attribute, which
costs about 25 µs each: 4 ms for a typical CT header, more than the whole rest of a store. This
encoder reads the raw values directly for the common VRs and hands everything unusual
(other character sets, implicit VR private tags, UN) to pydicom, so its output is the same as
pydicom's; the tests compare both on pydicom's own test files.
"""

from __future__ import annotations

import base64
import math
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
                    raw.VR, raw.value or b"", encoding, little, threshold, bulk_of, int(tag)
                )
        except Fallback:
            out[key] = ds[tag].to_json_dict(bulk, threshold)
    return out


Converter = Callable[[str, bytes, str, bool, int, Callable[[int], str], int], dict[str, Any]]


def value_json(
    vr: str,
    value: bytes,
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
    convert = _CONVERTERS.get(vr)
    if convert is None:
        raise Fallback
    if not value:
        return {"vr": vr}
    try:
        return convert(vr, value, encoding, little, threshold, bulk, tag)
    except (ValueError, UnicodeDecodeError, struct.error):
        raise Fallback from None


def _strings(vr: str, text: str) -> dict[str, Any]:
    """The JSON of a multi-valued string, padding already stripped from its end."""
    if not text:
        return {"vr": vr}
    if "\0" in text:
        raise Fallback
    if "\\" in text:
        parts = text.split("\\")
        for part in parts:
            # pydicom's handling of empty components and of padding inside values differs
            # by VR (a UID drops any white space around it, an AE spaces, a CS none)
            if not part or part != part.strip():
                raise Fallback
        return {"vr": vr, "Value": parts}
    if text != text.strip():
        raise Fallback
    return {"vr": vr, "Value": [text]}


def _default_text(
    vr: str, value: bytes, encoding: str, little: bool, threshold: int, bulk: Any, tag: int
) -> dict[str, Any]:
    """AE, AS, CS, DA, DT, TM, UI: pydicom decodes them as ASCII/Latin-1 whatever the
    character set (so only ASCII is read here)."""
    if not value.isascii():
        raise Fallback
    text = value.decode("ascii")
    return _strings(vr, text.rstrip(" \0") if vr == "UI" else text.rstrip(" "))


def _charset_text(
    vr: str, value: bytes, encoding: str, little: bool, threshold: int, bulk: Any, tag: int
) -> dict[str, Any]:
    """LO, SH, UC: in the data set's character set."""
    if b"\x1b" in value:
        raise Fallback  # escape sequences: pydicom switches character sets
    return _strings(vr, value.decode(encoding).rstrip(" "))


def _single_text(
    vr: str, value: bytes, encoding: str, little: bool, threshold: int, bulk: Any, tag: int
) -> dict[str, Any]:
    """LT, ST, UT (one value, backslashes included) and UR (ASCII)."""
    if vr == "UR":
        if not value.isascii():
            raise Fallback
        text = value.decode("ascii").rstrip()
    else:
        if b"\x1b" in value:
            raise Fallback
        text = value.decode(encoding).rstrip(" \0")
    if not text:
        return {"vr": vr}
    if "\0" in text:
        raise Fallback
    return {"vr": vr, "Value": [text]}


def _person_name(
    vr: str, value: bytes, encoding: str, little: bool, threshold: int, bulk: Any, tag: int
) -> dict[str, Any]:
    if b"\x1b" in value:
        raise Fallback
    text = value.rstrip(b" \0").decode(encoding)
    if not text:
        return {"vr": vr}
    names = []
    for name in text.split("\\"):
        if not name or "=" in name or "\0" in name or name != name.strip():
            raise Fallback  # several component groups, or padding pydicom may keep
        names.append({"Alphabetic": name})
    return {"vr": vr, "Value": names}


def _decimal(
    vr: str, value: bytes, encoding: str, little: bool, threshold: int, bulk: Any, tag: int
) -> dict[str, Any]:
    """IS and DS: plain decimal numbers only."""
    pattern = _IS if vr == "IS" else _DS
    number = int if vr == "IS" else float
    if b"\\" not in value:
        text = value.decode("ascii").strip(" \0")
        if not text:
            return {"vr": vr}
        if not pattern.fullmatch(text):
            raise Fallback
        result = number(text)
        if vr == "DS" and not math.isfinite(result):
            raise Fallback
        return {"vr": vr, "Value": [result]}
    parts = [p.strip(" \0") for p in value.decode("ascii").split("\\")]
    if any(not pattern.fullmatch(p) for p in parts):
        raise Fallback
    numbers = [number(p) for p in parts]
    if vr == "DS" and not all(map(math.isfinite, numbers)):
        raise Fallback
    return {"vr": vr, "Value": numbers}


_ONE = {vr: struct.Struct("<" + code).unpack for vr, code in _NUMBERS.items()}


def _binary_number(
    vr: str, value: bytes, encoding: str, little: bool, threshold: int, bulk: Any, tag: int
) -> dict[str, Any]:
    code = _NUMBERS[vr]
    size = _SIZES[code]
    if little and len(value) == size:
        numbers: tuple[Any, ...] = _ONE[vr](value)
    else:
        count, rest = divmod(len(value), size)
        if rest:
            raise Fallback
        numbers = struct.unpack(f"{'<' if little else '>'}{count}{code}", value)
    if (vr == "FL" or vr == "FD") and not all(map(math.isfinite, numbers)):
        raise Fallback
    return {"vr": vr, "Value": list(numbers)}


def _attribute_tag(
    vr: str, value: bytes, encoding: str, little: bool, threshold: int, bulk: Any, tag: int
) -> dict[str, Any]:
    count, rest = divmod(len(value), 4)
    if rest:
        raise Fallback
    halves = struct.unpack(f"{'<' if little else '>'}{2 * count}H", value)
    tags = [f"{halves[i]:04X}{halves[i + 1]:04X}" for i in range(0, len(halves), 2)]
    return {"vr": vr, "Value": tags}


def _binary(
    vr: str,
    value: bytes,
    encoding: str,
    little: bool,
    threshold: int,
    bulk: Callable[[int], str],
    tag: int,
) -> dict[str, Any]:
    if len(value) > threshold:
        return {"vr": vr, "BulkDataURI": bulk(tag)}
    if len(value) > threshold // 4 * 3:
        raise Fallback  # pydicom makes bulk data of anything whose base64 exceeds it
    return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}


_CONVERTERS: dict[str, Converter] = {
    **dict.fromkeys(_DEFAULT_ENCODED, _default_text),
    **dict.fromkeys(("LO", "SH", "UC"), _charset_text),
    **dict.fromkeys(_TEXT_SINGLE, _single_text),
    "PN": _person_name,
    "IS": _decimal,
    "DS": _decimal,
    **dict.fromkeys(_NUMBERS, _binary_number),
    "AT": _attribute_tag,
    **dict.fromkeys(_BINARY, _binary),
}
