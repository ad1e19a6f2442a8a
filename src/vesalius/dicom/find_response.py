"""C-FIND answers in the requester's character set (PS3.4 C.4.1.1.3, PS3.5 6.1 and Annex H-J).

A C-FIND response carries the keys the requester asked for, filled from the DICOM JSON the
index keeps. Person names keep all three component groups (alphabetic, ideographic,
phonetic). The answer is encoded in the character set the request names when that set can
carry every value, and in UTF-8 (``ISO_IR 192``) otherwise; Specific Character Set says which.

These are pure functions over pydicom datasets, so any DICOM network layer can call them:

- :func:`requested_character_set` once per request, before reading the identifier's values
  (it refuses a Specific Character Set term that does not exist, with a reason);
- :func:`find_response` once per match, to build the pending response's identifier.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pydicom import Dataset
from pydicom.charset import (
    convert_encodings,
    custom_encoders,
    need_tail_escape_sequence_encodings,
    python_encoding,
)
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.tag import BaseTag

from vesalius.dicom.dicomjson import DicomJson
from vesalius.dicom.dictionary import dictionary_entry
from vesalius.errors import InvalidQuery

UTF8 = "ISO_IR 192"
# Value representations whose text is encoded with Specific Character Set (PS3.5 6.1.2.3).
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
# Keys the answer sets itself rather than copying from the index.
_OWN_KEYS = ("QueryRetrieveLevel", "SpecificCharacterSet")
# The defined terms of PS3.3 C.12.1.1.2, single-byte and with code extensions (pydicom also
# knows a few misspellings, which are not defined terms).
DEFINED_TERMS = frozenset(python_encoding) - {"", "ISO_IR 6", "ISO 2022 58", "ISO 2022 GBK"}


def character_set_terms(value: Any) -> list[str]:
    """The terms of a Specific Character Set value as a list ("" for the default repertoire)."""
    if value is None:
        return []
    terms = value.split("\\") if isinstance(value, str) else [str(v) for v in value]
    terms = [t.strip() for t in terms]
    return [] if all(not t for t in terms) else terms


def request_keys(
    identifier: Dataset,
) -> Iterator[tuple[BaseTag, tuple[str, str] | None, str | None]]:
    """Each public key of a request identifier in tag order: its tag, its dictionary entry
    (keyword, VR; None for a tag the dictionary does not know) and, for an empty key not yet
    converted, its VR (else None: convert that element to read it).

    Most keys of a query are return keys, sent empty, and reading them raw spares pydicom
    converting every element (about 10 µs each, more than the rest of reading the query).
    The VR is pydicom's: the one sent, or the dictionary's in implicit VR. An element whose VR
    pydicom would resolve (UN, an ambiguous VR) is left to convert too.
    """
    for tag in sorted(identifier.keys()):
        if tag.is_private or tag.group == 0x0002:
            continue
        entry = dictionary_entry(int(tag))
        raw = identifier.get_item(tag, keep_deferred=True)
        vr = None
        if isinstance(raw, RawDataElement) and raw.length == 0:
            vr = raw.VR or (entry[1] if entry else None)
        if vr is not None and (len(vr) != 2 or vr == "UN"):
            vr = None
        yield tag, entry, vr


def requested_character_set(identifier: Dataset) -> list[str]:
    """The Specific Character Set terms of a request identifier, each checked.

    An empty list is the default repertoire.

    Raises
    ------
    InvalidQuery
        When a term is not one of the defined terms of PS3.3 C.12.1.1.2 (the identifier's
        text cannot be read reliably, so it is refused rather than guessed).
    """
    terms = character_set_terms(identifier.get("SpecificCharacterSet"))
    for index, term in enumerate(terms):
        if index == 0 and term == "":
            continue  # "\ISO 2022 IR 87": the default repertoire first
        if term not in DEFINED_TERMS:
            raise InvalidQuery(
                f"Specific Character Set {term!r} is not a defined term (PS3.3 C.12.1.1.2); "
                "use e.g. ISO_IR 100, ISO_IR 192, GB18030 or ISO 2022 IR 87"
            )
    return terms


def _can_encode_with(text: str, encoding: str) -> bool:
    try:
        if encoding in custom_encoders:
            custom_encoders[encoding](text, errors="strict")
        else:
            text.encode(encoding)
    except (UnicodeError, ValueError):
        return False
    return True


def can_carry(terms: Sequence[str], texts: Iterable[str]) -> bool:
    """Whether a Specific Character Set can encode every one of *texts* without loss.

    With code extensions (several ISO 2022 terms), each character needs one of the sets.
    """
    if not terms:
        return all(t.isascii() for t in texts)
    encodings = convert_encodings(list(terms))
    for text in texts:
        if text.isascii():
            continue
        if any(_can_encode_with(text, e) for e in encodings):
            continue
        if len(encodings) == 1 or not all(
            any(_can_encode_with(ch, e) for e in encodings) for ch in text
        ):
            return False
    return True


def person_name(value: Any) -> str:
    """A DICOM JSON person name (PS3.18 F.2.2) as the ``A=I=P`` string of PS3.5 6.2.1."""
    if not isinstance(value, dict):
        return "" if value is None else str(value)
    groups = [str(value.get(group) or "") for group in PN_GROUPS]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _text_values(ds: Dataset) -> Iterable[str]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _text_values(item)
        elif elem.VR in TEXT_VRS and elem.value not in (None, ""):
            values = elem.value if elem.VM > 1 else [elem.value]
            for value in values:
                yield str(value)


def _to_dataset(data: DicomJson) -> Dataset:
    """A dataset from DICOM JSON keeping every person-name group; bulk data is dropped."""
    ds = Dataset()
    complex_items: DicomJson = {}
    for tag, item in data.items():
        if "BulkDataURI" in item:
            continue
        vr = item.get("vr", "UN")
        if vr == "SQ" or "InlineBinary" in item:
            complex_items[tag] = item  # pydicom's reader keeps all PN groups in sequences
            continue
        values = item.get("Value")
        if vr == "PN" and values:
            values = [person_name(v) for v in values]
        if not values:
            ds.add_new(int(tag, 16), vr, empty_value_for_VR(vr))
        else:
            ds.add_new(int(tag, 16), vr, values if len(values) > 1 else values[0])
    if complex_items:
        ds.update(Dataset.from_json(complex_items))
    return ds


def find_response(identifier: Dataset, result: DicomJson, level: str) -> Dataset:
    """The identifier of one C-FIND pending response.

    Every requested key is present: filled from *result* when the index has it, empty
    otherwise. Text is set as Python strings; the encoder of the network layer writes them
    in the Specific Character Set this function chooses: the request's own when it can carry
    every value, ``ISO_IR 192`` otherwise, none when all is ASCII and none was asked for.
    """
    wanted = [e for e in identifier if not e.tag.is_private and e.tag.group != 0x0002]
    found: DicomJson = {}
    for elem in wanted:
        if elem.keyword in _OWN_KEYS:
            continue
        key = f"{elem.tag:08X}"
        if key in result:
            found[key] = result[key]
    response = _to_dataset(found)
    for elem in wanted:
        if elem.tag not in response and elem.keyword not in _OWN_KEYS:
            response.add_new(elem.tag, elem.VR, None)
    response.QueryRetrieveLevel = level
    requested = character_set_terms(identifier.get("SpecificCharacterSet"))
    texts = list(_text_values(response))
    if requested and can_carry(requested, texts):
        chosen: list[str] = requested
    elif all(t.isascii() for t in texts):
        chosen = requested  # the default repertoire is a subset of every set
    else:
        chosen = [UTF8]
    if chosen:
        response.SpecificCharacterSet = chosen if len(chosen) > 1 else chosen[0]
    return response


# -- Encoding answers straight from DICOM JSON ------------------------------------------------

# Explicit VR elements with a 4-byte length (PS3.5 7.1.2).
_LONG_LENGTH_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
# Text written as is in the default repertoire (pydicom's ``write_string``); UI pads with NUL.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UR", "UI"})
_BINARY_FORMATS = {
    "US": "H", "UL": "L", "SS": "h", "SL": "l", "SV": "q", "UV": "Q", "FL": "f", "FD": "d",
}  # fmt: skip
_INTS = (int,)
_NUMBERS = (int, float)


class _Fallback(Exception):
    """This answer needs the general path (a data set built and encoded by pydicom)."""


class AnswerEncoder:
    """C-FIND answers for one request, encoded straight from the index's DICOM JSON.

    Building a pydicom data set per answer and encoding it costs more server CPU than the rest
    of a C-FIND together. This writes the same bytes directly: for every key the identifier
    asks for, the element header and the value from the JSON (or an empty value), in tag
    order, with :func:`find_response`'s choice of Specific Character Set. Text outside the
    default repertoire, or in a character set with code extensions, is encoded by pydicom's
    own element writer; an answer with a sequence, inline binary or an ambiguous VR is built
    and encoded by pydicom whole. The result is byte for byte what
    ``encode(find_response(identifier, result, level))`` gives (tests/dicom compare them).
    """

    def __init__(self, identifier: Dataset, level: str, *, implicit: bool) -> None:
        self.identifier = identifier
        self.level = level
        self.implicit = implicit
        self.requested = character_set_terms(identifier.get("SpecificCharacterSet"))
        # (tag, JSON key, the identifier's VR) of each requested key, in tag order; retired
        # group lengths are never written (pydicom's rule too).
        self.keys: list[tuple[int, str, str]] = []
        for tag, entry, empty_vr in request_keys(identifier):
            if (tag.element == 0 and tag.group > 6) or (entry and entry[0] in _OWN_KEYS):
                continue
            self.keys.append((int(tag), f"{tag:08X}", empty_vr or identifier[tag].VR))
        self._headers: dict[tuple[int, str], tuple[bytes, bool]] = {}
        self._simple_sets: dict[tuple[str, ...], bool] = {}
        self.fallbacks = 0  # answers that took the general path
        self.level_element = self._element(0x00080052, "CS", _pad(level.encode("ascii"), b" "))

    # -- the general path --------------------------------------------------------------------

    def _pydicom(self, result: DicomJson) -> bytes | None:
        from pynetdicom.dsutils import encode as encode_dataset

        answer = find_response(self.identifier, result, self.level)
        return encode_dataset(answer, self.implicit, True)  # type: ignore[no-any-return]

    # -- the direct path ---------------------------------------------------------------------

    def encode(self, result: DicomJson) -> bytes | None:
        """The encoded identifier of the pending response for *result* (None: unencodable)."""
        try:
            return self._direct(result)
        except _Fallback:
            self.fallbacks += 1
            return self._pydicom(result)

    def _header(self, tag: int, vr: str, length: int) -> bytes:
        cached = self._headers.get((tag, vr))
        if cached is None:
            if len(vr) != 2:
                raise _Fallback  # ambiguous: pydicom resolves it against the data set
            group, element = tag >> 16, tag & 0xFFFF
            if self.implicit:
                prefix = struct.pack("<HH", group, element)
            elif vr in _LONG_LENGTH_VRS:
                prefix = struct.pack("<HH2s2x", group, element, vr.encode("ascii"))
            else:
                prefix = struct.pack("<HH2s", group, element, vr.encode("ascii"))
            cached = (prefix, self.implicit or vr in _LONG_LENGTH_VRS)
            self._headers[(tag, vr)] = cached
        prefix, long_length = cached
        if long_length:
            return prefix + _UL.pack(length)
        if length > 0xFFFF:
            raise _Fallback  # pydicom writes such a value as UN
        return prefix + _US.pack(length)

    def _element(self, tag: int, vr: str, value: bytes) -> bytes:
        return self._header(tag, vr, len(value)) + value

    def _direct(self, result: DicomJson) -> bytes:
        # First pass: each key's VR and values (person names as strings), and the text that
        # decides the character set.
        items: list[tuple[int, str, list[Any] | None]] = []
        texts: list[str] = []
        for tag, key, asked_vr in self.keys:
            item = result.get(key)
            if item is None or "BulkDataURI" in item:
                items.append((tag, asked_vr, None))
                continue
            vr = item.get("vr", "UN")
            if vr == "SQ" or "InlineBinary" in item:
                raise _Fallback
            values = item.get("Value")
            if not values:
                items.append((tag, vr, None))
                continue
            if vr == "PN":
                values = [person_name(v) for v in values]
            if vr in TEXT_VRS:
                for value in values:
                    if not isinstance(value, str):
                        raise _Fallback
                    if value:
                        texts.append(value)
            items.append((tag, vr, values))
        ascii_only = all(t.isascii() for t in texts)
        carried = ascii_only or (bool(self.requested) and can_carry(self.requested, texts))
        chosen = self.requested if carried else [UTF8]
        simple = self._simple(chosen)
        parts: list[tuple[int, bytes]] = [(0x00080052, self.level_element)]
        if chosen:
            value = "\\".join(chosen).encode("ascii")
            parts.append((0x00080005, self._element(0x00080005, "CS", _pad(value, b" "))))
        for tag, vr, values in items:
            if values is None:
                parts.append((tag, self._header(tag, vr, 0)))
                continue
            raw = self._value(vr, values, simple)
            if raw is None:
                parts.append((tag, self._by_pydicom(tag, vr, values, chosen)))
            else:
                parts.append((tag, self._element(tag, vr, raw)))
        parts.sort(key=_first)
        return b"".join(part for _, part in parts)

    def _simple(self, chosen: list[str]) -> bool:
        """Whether ASCII text is written as its ASCII bytes in *chosen* (no code extensions)."""
        key = tuple(chosen)
        simple = self._simple_sets.get(key)
        if simple is None:
            encodings = convert_encodings(list(chosen) or ["ISO_IR 6"])
            simple = len(encodings) == 1 and encodings[0] not in need_tail_escape_sequence_encodings
            self._simple_sets[key] = simple
        return simple

    def _value(self, vr: str, values: list[Any], simple: bool) -> bytes | None:
        """The value bytes, padded; None when pydicom's writer must encode the element (text
        outside the default repertoire, DS, AT, values of unexpected types)."""
        if vr in TEXT_VRS:
            if not simple:
                return None
            for value in values:
                if not value.isascii():
                    return None
            # pydicom drops a person name's empty trailing groups, value by value
            strings = [v.rstrip("=") for v in _split(values)] if vr == "PN" else values
            return _pad("\\".join(strings).encode("ascii"), b" ")
        if vr in _ASCII_VRS:
            for value in values:
                if not isinstance(value, str) or not value.isascii():
                    return None
            # pydicom's UID strips each value
            strings = [v.strip() for v in _split(values)] if vr == "UI" else values
            return _pad("\\".join(strings).encode("ascii"), b"\x00" if vr == "UI" else b" ")
        if vr == "IS":
            if not all(type(v) in _INTS for v in values):
                return None
            return _pad("\\".join(str(v) for v in values).encode("ascii"), b" ")
        fmt = _BINARY_FORMATS.get(vr)
        if fmt is None:
            return None  # DS, AT, OB, UN...: pydicom's conversions decide the bytes
        for value in values:
            if type(value) not in (_NUMBERS if fmt in "fd" else _INTS):
                return None
        try:
            return struct.pack(f"<{len(values)}{fmt}", *values)
        except struct.error:
            return None

    def _by_pydicom(self, tag: int, vr: str, values: list[Any], chosen: list[str]) -> bytes:
        """One element encoded by pydicom's writer (text in the chosen character set)."""
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_data_element

        dataset = Dataset()
        dataset.add_new(tag, vr, values if len(values) > 1 else values[0])
        out = DicomBytesIO()
        out.is_little_endian = True
        out.is_implicit_VR = self.implicit
        try:
            write_data_element(out, dataset[tag], chosen or None)
        except Exception:
            raise _Fallback from None
        return out.getvalue()


_US = struct.Struct("<H")
_UL = struct.Struct("<I")


def _split(values: list[str]) -> list[str]:
    """The values as pydicom holds them: a single string is split at its backslashes."""
    return values[0].split("\\") if len(values) == 1 else values


def _pad(value: bytes, padding: bytes) -> bytes:
    return value + padding if len(value) % 2 else value


def _first(part: tuple[int, bytes]) -> int:
    return part[0]
