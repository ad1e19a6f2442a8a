"""C-FIND answers encoded straight from DICOM JSON: byte for byte what pydicom encodes.

:class:`AnswerEncoder` must give exactly ``encode(find_response(...))`` for any identifier
and answer; these compare the two over many generated pairs: every VR a query key can have,
person names with all groups, empty, missing and multiple values, sequences, both transfer
syntaxes and the character sets a requester may name.
"""

from __future__ import annotations

import io
import random
import warnings
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pynetdicom.dsutils import decode, encode

from vesalius.dicom.dicomjson import dataset_to_json, element
from vesalius.dicom.find_response import AnswerEncoder, find_response

# Query keys of every VR an identifier may carry (value generators below).
KEYS = [
    "PatientName", "ReferringPhysicianName", "PatientID", "StudyDescription", "AccessionNumber",
    "StudyID", "PatientBirthDate", "StudyDate", "StudyTime", "AcquisitionDateTime", "PatientSex",
    "ModalitiesInStudy", "ImageType", "StudyInstanceUID", "SOPClassesInStudy",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "SeriesNumber",
    "PatientAge", "PatientWeight", "RetrieveAETitle", "StudyComments", "DerivationDescription",
    "LongCodeValue", "URNCodeValue", "SelectorUTValue", "SimpleFrameList", "TagAngleSecondAxis",
    "SelectorUSValue", "SelectorSLValue", "SelectorFLValue", "SelectorFDValue",
    "SelectorATValue", "SelectorSVValue", "SelectorUVValue", "ReferencedStudySequence",
]  # fmt: skip
CHARACTER_SETS: list[Any] = [
    None, "", "ISO_IR 100", "ISO_IR 192", "ISO_IR 144", "GB18030", "ISO_IR 13",
    ["", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 100"], "ISO 2022 IR 149",
]  # fmt: skip
NAMES = [
    "DOE^JOHN", "MÜLLER^JÜRGEN", "Иванов^Иван", "山田^太郎", "王^小明", "O'BRIEN^A B", "",
    "DOE^J==", "A^B=\\C^D=", "=YAMADA",
]  # fmt: skip
TEXTS = ["CT HEAD", "Schädel", "Грудь", "胸部", "", "A\\B", "  padded  ", "odd"]


def _person(rng: random.Random) -> Any:
    if rng.random() < 0.4:
        return rng.choice(NAMES)
    groups = {"Alphabetic": rng.choice([*NAMES[:2], ""])}
    if rng.random() < 0.5:
        groups["Ideographic"] = rng.choice(["山田^太郎", "", "王^小明"])
    if rng.random() < 0.4:
        groups["Phonetic"] = rng.choice(["やまだ^たろう", "", "YAMADA"])
    return {k: v for k, v in groups.items() if v or rng.random() < 0.5}


def _values(keyword: str, vr: str, rng: random.Random) -> list[Any]:
    count = rng.choice([1, 1, 1, 2, 3])
    if vr == "PN":
        return [_person(rng) for _ in range(count)]
    if vr in ("LO", "SH", "LT", "ST", "UT", "UC"):
        return [rng.choice(TEXTS) for _ in range(1 if vr in ("LT", "ST", "UT") else count)]
    if vr == "DA":
        return [rng.choice(["20200101", "19991231", "2020-01-01"]) for _ in range(count)]
    if vr == "TM":
        return [rng.choice(["101010", "0930", "235959.123456"]) for _ in range(count)]
    if vr == "DT":
        return [rng.choice(["20200101101010", "2020", "20200101101010.5+0100"])]
    if vr == "CS":
        return [rng.choice(["CT", "MR", "ORIGINAL", "M", "A"]) for _ in range(count)]
    if vr == "AS":
        return [rng.choice(["045Y", "003M"])]
    if vr == "AE":
        return [rng.choice(["VESALIUS", "PACS1", "ODD"]) for _ in range(count)]
    if vr == "UI":
        return [
            rng.choice(["1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.23", "1.2.4 "])
            for _ in range(count)
        ]
    if vr == "UR":
        return [rng.choice(["http://example.com/a", "urn:x"])]
    if vr == "IS":
        return [rng.choice([0, 1, 12, 12345, -3]) for _ in range(count)]
    if vr == "DS":
        return [rng.choice([70, 70.5, 0.1, 1e-5, 123456.25]) for _ in range(count)]
    if vr in ("US", "UL", "UV"):
        return [rng.choice([0, 1, 512, 65535]) for _ in range(count)]
    if vr in ("SS", "SL", "SV"):
        return [rng.choice([0, -1, 32767, -32768]) for _ in range(count)]
    if vr in ("FL", "FD"):
        return [rng.choice([0.0, 1.5, -2.25, 0.1]) for _ in range(count)]
    if vr == "AT":
        return [rng.choice(["00100010", "0020000D"])]
    raise AssertionError(f"no values for {keyword} ({vr})")


def _identifier(keywords: list[str], charset: Any, rng: random.Random) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    if charset is not None:
        ds.SpecificCharacterSet = charset
    for keyword in keywords:
        vr = dictionary_VR(keyword)
        if vr == "SQ":
            ds.add_new(tag_for_keyword(keyword), vr, [])
        elif keyword == "PatientName" and rng.random() < 0.3:
            ds.PatientName = "DOE*"
        else:
            ds.add_new(tag_for_keyword(keyword), vr, None)
    return ds


def _result(keywords: list[str], rng: random.Random) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for keyword in keywords:
        vr = dictionary_VR(keyword)
        key = f"{tag_for_keyword(keyword):08X}"
        roll = rng.random()
        if roll < 0.15:
            continue  # not in the index: answered empty
        if roll < 0.25:
            result[key] = {"vr": vr}  # present without a value
            continue
        if roll < 0.28:
            result[key] = {"vr": vr, "BulkDataURI": "bulkdata:x"}
            continue
        if vr == "SQ":
            item = Dataset()
            item.ReferencedSOPInstanceUID = "1.2.3"
            item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
            container = Dataset()
            container.ReferencedStudySequence = [item]
            result.update(dataset_to_json(container))
            continue
        result[key] = element(keyword, _values(keyword, vr, rng))
    return result


def _over_the_wire(identifier: Dataset, implicit: bool) -> Dataset:
    """The identifier as the server reads it from a request in that transfer syntax."""
    raw = encode(identifier, implicit, True)
    assert raw is not None
    return decode(io.BytesIO(raw), implicit, True)


def test_matches_pydicom_over_generated_answers() -> None:
    rng = random.Random(8)
    direct = fallbacks = compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about deliberately odd values
        for round_no in range(60):
            keywords = rng.sample(KEYS, rng.randint(1, len(KEYS)))
            if round_no % 3 == 0:
                keywords = [k for k in keywords if dictionary_VR(k) != "SQ"]
            charset = rng.choice(CHARACTER_SETS)
            for implicit in (True, False):
                identifier = _over_the_wire(_identifier(keywords, charset, rng), implicit)
                encoder = AnswerEncoder(identifier, "STUDY", implicit=implicit)
                for _ in range(4):
                    result = _result(keywords, rng)
                    expected = encode(find_response(identifier, result, "STUDY"), implicit, True)
                    before = encoder.fallbacks
                    assert encoder.encode(result) == expected, (identifier, result, implicit)
                    compared += 1
                    if encoder.fallbacks == before:
                        direct += 1
                    else:
                        fallbacks += 1
    assert compared >= 400
    assert direct > compared * 2 // 3, (direct, fallbacks)  # the direct path is the usual one


@pytest.mark.parametrize("implicit", [True, False])
def test_study_list_answers_never_need_pydicom(implicit: bool) -> None:
    """The usual study-level keys with values in the default repertoire take the direct
    path every time."""
    keywords = [
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
        "StudyTime", "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
        "StudyInstanceUID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ]  # fmt: skip
    rng = random.Random(1)
    identifier = _over_the_wire(_identifier(keywords, None, rng), implicit)
    encoder = AnswerEncoder(identifier, "STUDY", implicit=implicit)
    for number in range(50):
        result = {
            f"{tag_for_keyword(k):08X}": element(k, v)
            for k, v in {
                "PatientName": [{"Alphabetic": f"DOE^P{number}"}],
                "PatientID": [f"ID{number}"],
                "StudyDate": ["20200101"],
                "StudyInstanceUID": [f"1.2.3.{number}"],
                "ModalitiesInStudy": ["CT", "SR"][: 1 + number % 2],
                "NumberOfStudyRelatedInstances": [number],
                "AccessionNumber": [],
            }.items()
        }
        expected = encode(find_response(identifier, result, "STUDY"), implicit, True)
        assert encoder.encode(result) == expected
    assert encoder.fallbacks == 0


def test_non_ascii_names_switch_to_utf8_like_pydicom() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientName = ""
    identifier.SpecificCharacterSet = "ISO_IR 100"
    for name in ("MÜLLER^JÜRGEN", "Иванов^Иван", {"Alphabetic": "YAMADA", "Ideographic": "山田"}):
        result = {"00100010": element("PatientName", [name])}
        for implicit in (True, False):
            encoder = AnswerEncoder(identifier, "PATIENT", implicit=implicit)
            expected = encode(find_response(identifier, result, "PATIENT"), implicit, True)
            assert encoder.encode(result) == expected
