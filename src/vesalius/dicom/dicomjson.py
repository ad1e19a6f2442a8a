"""The DICOM JSON model (PS3.18 F.2): what the index stores and DICOMweb returns.

Bulk data (pixel data and other large binary values) is left out of the stored JSON and
replaced by a ``BulkDataURI`` holding the element's tag; the HTTP layer turns it into a full
URL when it answers.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import orjson
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.tag import Tag

from vesalius.dicom.fastjson import dataset_json

DicomJson = dict[str, dict[str, Any]]

BULK_PREFIX = "bulkdata:"
BULK_DATA_THRESHOLD = 1024  # bytes; binary values larger than this become BulkDataURIs


def _bulk_handler(element: DataElement) -> str:
    return f"{BULK_PREFIX}{element.tag:08X}"


def dataset_to_json(ds: Dataset) -> DicomJson:
    """The DICOM JSON of a dataset, bulk data given as ``bulkdata:<tag>`` URIs.

    File meta information is not included.
    """
    return dataset_json(ds, BULK_DATA_THRESHOLD, _bulk_handler)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


@functools.lru_cache(maxsize=4096)
def tag_key(keyword_or_tag: str | int) -> str:
    """The 8-hex-digit tag string for a keyword or tag.

    Examples
    --------
    >>> tag_key("PatientName")
    '00100010'
    """
    if isinstance(keyword_or_tag, int):
        return f"{keyword_or_tag:08X}"
    tag = tag_for_keyword(keyword_or_tag)
    if tag is None:
        raise KeyError(keyword_or_tag)
    return f"{tag:08X}"


def keyword_of(tag: str) -> str:
    """The keyword of an 8-hex-digit tag, or the tag itself for a private/unknown one."""
    return keyword_for_tag(int(tag, 16)) or tag


def subset(data: DicomJson, keywords: Iterable[str]) -> DicomJson:
    """The elements of *data* whose keyword is in *keywords*."""
    out: DicomJson = {}
    for keyword in keywords:
        key = tag_key(keyword)
        if key in data:
            out[key] = data[key]
    return out


def element(keyword: str, values: list[Any] | None) -> dict[str, Any]:
    """A DICOM JSON element for a keyword (values omitted when empty)."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    vr = dictionary_VR(Tag(tag))
    item: dict[str, Any] = {"vr": vr}
    if values:
        if vr == "PN":
            item["Value"] = [{"Alphabetic": v} if isinstance(v, str) else v for v in values]
        else:
            item["Value"] = values
    return item


def value_strings(item: dict[str, Any] | None) -> list[str]:
    """The values of a DICOM JSON element as strings, for matching.

    Person names give their alphabetic form; numbers give their decimal text.
    """
    if not item:
        return []
    out: list[str] = []
    for value in item.get("Value", ()):
        if isinstance(value, dict):
            out.append(str(value.get("Alphabetic", "")))
        elif value is None:
            continue
        else:
            out.append(str(value))
    return out


def first_string(data: DicomJson, keyword: str) -> str | None:
    values = value_strings(data.get(tag_key(keyword)))
    return values[0] if values else None


def to_dataset(data: DicomJson) -> Dataset:
    """A pydicom dataset from DICOM JSON (bulk data URIs are dropped).

    Plain elements are added directly, which is several times faster than
    ``Dataset.from_json``; sequences and inline binary go through pydicom.
    """
    ds = Dataset()
    complex_items: DicomJson = {}
    for tag, item in data.items():
        if "BulkDataURI" in item:
            continue
        vr = item.get("vr", "UN")
        if vr == "SQ" or "InlineBinary" in item:
            complex_items[tag] = item
            continue
        values = item.get("Value")
        if vr == "PN" and values:
            values = [v.get("Alphabetic", "") if isinstance(v, dict) else v for v in values]
        if not values:
            ds.add_new(int(tag, 16), vr, empty_value_for_VR(vr))
        else:
            ds.add_new(int(tag, 16), vr, values if len(values) > 1 else values[0])
    if complex_items:
        ds.update(Dataset.from_json(complex_items))
    return ds
