"""The identifier of a C-FIND, C-GET or C-MOVE request, as an archive query."""

from __future__ import annotations

from pydicom import DataElement, Dataset
from pydicom.multival import MultiValue

from vesalius.archive.query import Query, build_query
from vesalius.dicom.find_response import request_keys
from vesalius.dicom.levels import Level, Model
from vesalius.dimse.negotiation import PATIENT_ROOT
from vesalius.errors import InvalidQuery


def identifier_keys(identifier: Dataset) -> list[tuple[str, str | None]]:
    """(keyword, value) pairs of a query identifier: values as text, None for a return key.

    Return keys are read raw (:func:`~vesalius.dicom.find_response.request_keys`):
    converting every element of a dozen-key identifier cost about 0.2 ms, more than building
    the query from the keys.
    """
    keys: list[tuple[str, str | None]] = []
    for tag, entry, empty_vr in request_keys(identifier):
        if entry is not None:
            keys.append((entry[0], None if empty_vr is not None else _text(identifier[tag])))
    return keys


def _text(elem: DataElement) -> str | None:
    """An element's value as query text; None when it is empty or a sequence."""
    if elem.VR == "SQ":
        return None
    value = elem.value
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value)


def query_from(identifier: Dataset, sop_class: str) -> Query:
    """The query of *identifier* in the information model of *sop_class*.

    Raises :class:`InvalidQuery` for a level the model does not have, or a bad key value.
    """
    model = Model.PATIENT_ROOT if sop_class in PATIENT_ROOT else Model.STUDY_ROOT
    raw_level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(raw_level)
    except ValueError:
        raise InvalidQuery(
            f"QueryRetrieveLevel {raw_level!r} is not one of PATIENT, STUDY, SERIES, IMAGE"
        ) from None
    if level not in model.levels():
        raise InvalidQuery(f"level {level.value} is not part of the {model.value} model")
    return build_query(level, identifier_keys(identifier))
