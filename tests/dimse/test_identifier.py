"""The query keys read from a C-FIND identifier as it arrives: raw, straight off the wire."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import encode

from vesalius.dicom.find_response import AnswerEncoder
from vesalius.dimse.identifier import identifier_keys, query_from
from vesalius.errors import InvalidQuery

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _identifier() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "Müller^Jörg*"
    ds.PatientID = ""
    ds.StudyDate = "20210101-20211231"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.StudyInstanceUID = ""
    ds.AccessionNumber = ""
    ds.NumberOfStudyRelatedInstances = ""
    ds.ReferringPhysicianName = ""
    ds.ProcedureCodeSequence = Sequence([])
    ds.RequestAttributesSequence = Sequence([Dataset()])
    ds.add_new(0x00091010, "LO", "private")
    ds.add_new(0x00990010, "LO", "")
    return ds


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit VR", "explicit VR"])
def test_keys_read_raw_are_those_of_the_converted_identifier(implicit: bool) -> None:
    raw = read_dataset(BytesIO(encode(_identifier(), implicit, True)), implicit, True)
    converted = read_dataset(BytesIO(encode(_identifier(), implicit, True)), implicit, True)
    list(converted)  # iterating converts every element: identifier_keys reads them converted

    keys = identifier_keys(raw)

    assert keys == identifier_keys(converted)
    assert dict(keys) == {
        "SpecificCharacterSet": "ISO_IR 192",
        "QueryRetrieveLevel": "STUDY",
        "PatientName": "Müller^Jörg*",
        "PatientID": None,
        "StudyDate": "20210101-20211231",
        "ModalitiesInStudy": "CT\\MR",
        "StudyInstanceUID": None,
        "AccessionNumber": None,
        "NumberOfStudyRelatedInstances": None,
        "ReferringPhysicianName": None,
        "ProcedureCodeSequence": None,
        "RequestAttributesSequence": None,
    }


def test_a_bad_value_read_raw_is_still_refused() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyDate = "2021-13-99"
    ds.StudyInstanceUID = ""
    raw = read_dataset(BytesIO(encode(ds, True, True)), True, True)

    with pytest.raises(InvalidQuery, match="StudyDate"):
        query_from(raw, STUDY_ROOT_FIND)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit VR", "explicit VR"])
def test_answer_keys_read_raw_are_those_of_the_converted_identifier(implicit: bool) -> None:
    """The answer encoder reads the VR of each empty key raw; it must be pydicom's VR."""
    raw = read_dataset(BytesIO(encode(_identifier(), implicit, True)), implicit, True)
    converted = read_dataset(BytesIO(encode(_identifier(), implicit, True)), implicit, True)
    list(converted)

    from_raw = AnswerEncoder(raw, "STUDY", implicit=implicit).keys
    from_converted = AnswerEncoder(converted, "STUDY", implicit=implicit).keys

    assert from_raw == from_converted
    assert ("00080050", "SH") in {(key, vr) for _, key, vr in from_raw}  # AccessionNumber
    assert ("00081032", "SQ") in {(key, vr) for _, key, vr in from_raw}  # ProcedureCodeSequence
