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

from collections.abc import Iterable, Sequence
from typing import Any

from pydicom import Dataset
from pydicom.charset import convert_encodings, custom_encoders, python_encoding
from pydicom.dataelem import empty_value_for_VR

from vesalius.dicom.dicomjson import DicomJson
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
