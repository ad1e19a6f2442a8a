"""Shaping DICOM JSON for DICOMweb answers (PS3.18 F.2, Tables 6.7.1-2 and 6.7.1-2a).

QIDO answers carry the default attributes of their level, the attributes asked for with
``includefield`` and those used as matching keys. Stored metadata carries bulk data as
``bulkdata:<tag>`` placeholders, which become absolute ``BulkDataURI``\\s here: by string
replacement on the stored text for ``/metadata`` (no JSON parsing), by walking the dict for QIDO.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from vesalius.dicom.dicomjson import BULK_PREFIX, DicomJson, tag_key
from vesalius.dicom.levels import Level

STUDY_DEFAULTS: tuple[str, ...] = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)

SERIES_DEFAULTS: tuple[str, ...] = (
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "RetrieveURL",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)

INSTANCE_DEFAULTS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

# Attributes an answer may carry though no stored record holds them.
GENERATED = frozenset({"RetrieveURL", "InstanceAvailability"})

_BULK_MARK = f'"BulkDataURI":"{BULK_PREFIX}'


def default_attributes(level: Level, study_scoped: bool, series_scoped: bool) -> list[str]:
    """Default return attributes of a QIDO search at *level* (PS3.18 Table 6.7.1-2).

    A search not scoped to a study also returns the study's defaults, one not scoped to a
    series the series' defaults (PS3.18 6.7.1.2.2).
    """
    keywords: list[str] = []
    if level is Level.STUDY:
        return list(STUDY_DEFAULTS)
    if level is Level.SERIES:
        keywords = list(SERIES_DEFAULTS)
        if not study_scoped:
            keywords += STUDY_DEFAULTS
        return keywords
    keywords = list(INSTANCE_DEFAULTS)
    if not series_scoped:
        keywords += SERIES_DEFAULTS
    if not study_scoped:
        keywords += STUDY_DEFAULTS
    return keywords


def retrieve_url(
    base: str, study: str | None, series: str | None = None, instance: str | None = None
) -> str:
    url = f"{base}/studies/{study}"
    if series:
        url += f"/series/{series}"
        if instance:
            url += f"/instances/{instance}"
    return url


def select(
    data: DicomJson, tags: Iterable[str] | None, generated: dict[str, dict[str, Any]]
) -> DicomJson:
    """The elements of *data* (plus *generated*) with these tags, sorted; all when None.

    Only elements that carry something (a ``Value``, ``BulkDataURI`` or ``InlineBinary``) are
    answered: an asked-for attribute the record has no value for is left out, as PS3.18 F.2.5
    allows, rather than sent as a bare ``{"vr": ...}``. Clients read such a bare element as
    "present" and then fail on its missing ``Value`` (OHIF's study list does, on a study-level
    ``Modality`` or an empty ``ModalitiesInStudy``).
    """
    merged = {**data, **generated}
    if tags is None:
        return {tag: item for tag, item in sorted(merged.items()) if has_content(item)}
    out: DicomJson = {}
    for tag in tags:
        item = merged.get(tag)
        if item is not None and has_content(item):
            out[tag] = item
    return dict(sorted(out.items()))


def has_content(element: Any) -> bool:
    """Whether a DICOM JSON element carries a value (or bulk data), not just its VR.

    Examples
    --------
    >>> has_content({"vr": "CS"}), has_content({"vr": "CS", "Value": []})
    (False, False)
    >>> has_content({"vr": "PN", "Value": [{}]}), has_content({"vr": "OB", "BulkDataURI": "x"})
    (True, True)
    """
    if not isinstance(element, dict):
        return False
    return bool(element.get("Value")) or "BulkDataURI" in element or "InlineBinary" in element


def tags_of(keywords: Iterable[str]) -> list[str]:
    return [tag_key(k) for k in keywords]


def keyword_or_tag(name: str) -> str | None:
    """The keyword for a QIDO attribute name given as keyword or 8-hex-digit tag.

    Returns the tag itself for a private or unknown-but-well-formed tag and ``None`` when the
    name is neither a keyword nor a tag.

    Examples
    --------
    >>> keyword_or_tag("0020000D"), keyword_or_tag("PatientName"), keyword_or_tag("Nope")
    ('StudyInstanceUID', 'PatientName', None)
    """
    if tag_for_keyword(name) is not None:
        return name
    if len(name) == 8:
        try:
            tag = int(name, 16)
        except ValueError:
            return None
        return keyword_for_tag(tag) or name.upper()
    return None


def expand_bulk_text(text: str, instance_url: str) -> str:
    """Stored metadata text with its bulk data placeholders made absolute URLs.

    Examples
    --------
    >>> expand_bulk_text('{"7FE00010":{"vr":"OW","BulkDataURI":"bulkdata:7FE00010"}}', "http://x")
    '{"7FE00010":{"vr":"OW","BulkDataURI":"http://x/bulkdata/7FE00010"}}'
    """
    if _BULK_MARK not in text:
        return text
    return text.replace(_BULK_MARK, f'"BulkDataURI":"{instance_url}/bulkdata/')


def expand_bulk(data: Any, instance_url: str) -> Any:
    """The same for parsed JSON (used by QIDO ``includefield=all`` at instance level)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key == "BulkDataURI" and isinstance(value, str) and value.startswith(BULK_PREFIX):
                out[key] = f"{instance_url}/bulkdata/{value[len(BULK_PREFIX) :]}"
            else:
                out[key] = expand_bulk(value, instance_url)
        return out
    if isinstance(data, list):
        return [expand_bulk(v, instance_url) for v in data]
    return data


def join_json_texts(texts: Iterable[str]) -> bytes:
    """A JSON array from already-serialised objects, without parsing them."""
    return ("[" + ",".join(texts) + "]").encode()
