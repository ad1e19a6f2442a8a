"""The identifier of a C-FIND, C-GET or C-MOVE request, as an archive query."""

from __future__ import annotations

from pydicom import Dataset
from pydicom.multival import MultiValue

from vesalius.archive.query import Query, build_query
from vesalius.dicom.levels import Level, Model
from vesalius.dimse.negotiation import PATIENT_ROOT
from vesalius.errors import InvalidQuery


def identifier_keys(identifier: Dataset) -> list[tuple[str, str | None]]:
    """(keyword, value) pairs of a query identifier: values as text, None for a return key."""
    keys: list[tuple[str, str | None]] = []
    for elem in identifier:
        if elem.tag.is_private or not elem.keyword or elem.tag.group == 0x0002:
            continue
        if elem.VR == "SQ":
            keys.append((elem.keyword, None))
            continue
        value = elem.value
        if value is None or value == "":
            keys.append((elem.keyword, None))
        elif isinstance(value, MultiValue | list):
            keys.append((elem.keyword, "\\".join(str(v) for v in value)))
        else:
            keys.append((elem.keyword, str(value)))
    return keys


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
