"""C-FIND answers keep every person-name group, in the requester's character set or in UTF-8.

DCMTK's findscu sends query files written in each character set and saves the answers as
they came over the wire; pynetdicom does the same in Python. Each query uses wildcard
matching on a name written in that set.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from dicomgen import make_dataset, write
from vesalius.dicom.dicomjson import dataset_to_json
from vesalius.dicom.find_response import can_carry, find_response, requested_character_set
from vesalius.errors import InvalidQuery

DCMTK = Path("/usr/bin")
needs_dcmtk = pytest.mark.skipif(
    not (DCMTK / "findscu").exists(), reason="DCMTK is not installed (apt-get install dcmtk)"
)


@dataclass(frozen=True)
class Case:
    label: str
    charset: str | list[str]
    name: str
    patient_id: str
    query: str  # a wildcard query in the same character set


CASES = [
    Case("latin1", "ISO_IR 100", "Müller^José", "CS-LATIN1", "Mü*"),
    Case("greek", "ISO_IR 126", "Διονυσιος^Γιαννης", "CS-GREEK", "Διον*"),
    Case("cyrillic", "ISO_IR 144", "Люксембург^Иван", "CS-CYRILLIC", "Люкс*^Ив?н"),
    Case("gb18030", "GB18030", "Wang^XiaoDong=王^小东", "CS-GB18030", "Wang*=王*"),
    Case("chinese-utf8", "ISO_IR 192", "Li^Hua=李^华", "CS-ZH-UTF8", "Li^H*"),
    Case(
        "iso2022-ir87",
        ["", "ISO 2022 IR 87"],
        "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "CS-JIS",
        "Yamada*=山田*",
    ),
    Case(
        "japanese-utf8",
        "ISO_IR 192",
        "Tanaka^Hanako=田中^花子=たなか^はなこ",
        "CS-JA-UTF8",
        "Tana?a^*",
    ),
]
IDS = [c.label for c in CASES]


def patient(case: Case) -> Dataset:
    ds = make_dataset(PatientID=case.patient_id)
    ds.SpecificCharacterSet = case.charset
    ds.PatientName = case.name
    ds.StudyDescription = {"greek": "Θώρακας", "cyrillic": "Грудь"}.get(case.label, "Chest")
    return ds


def query(case: Case, charset: str | list[str] | None, level: str = "PATIENT") -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = level
    ds.PatientName = case.query
    ds.PatientID = ""
    if level == "STUDY":
        ds.StudyInstanceUID = ""
        ds.StudyDescription = ""
    return ds


def _terms(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# -- the pure function -------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_answer_keeps_all_groups_in_the_requested_set(case: Case) -> None:
    stored = dataset_to_json(patient(case))
    answer = find_response(query(case, case.charset), stored, "PATIENT")
    assert str(answer.PatientName) == case.name
    assert _terms(answer.SpecificCharacterSet) == _terms(case.charset)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_answer_falls_back_to_utf8_when_the_requested_set_cannot_carry_it(case: Case) -> None:
    stored = dataset_to_json(patient(case))
    requested = "ISO_IR 101" if case.label != "latin1" else "ISO_IR 126"  # cannot carry it
    answer = find_response(query(case, requested), stored, "PATIENT")
    assert str(answer.PatientName) == case.name
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    # No character set asked for: the default repertoire cannot carry it either.
    answer = find_response(query(case, None), stored, "PATIENT")
    assert answer.SpecificCharacterSet == "ISO_IR 192"


def test_ascii_answer_to_a_plain_request_names_no_character_set() -> None:
    stored = dataset_to_json(make_dataset(PatientName="DOE^JOHN"))
    ident = Dataset()
    ident.QueryRetrieveLevel = "PATIENT"
    ident.PatientName = "DOE*"
    ident.PatientBirthDate = ""
    ident.OtherPatientIDs = ""  # not in the index: present and empty
    answer = find_response(ident, stored, "PATIENT")
    assert "SpecificCharacterSet" not in answer
    assert answer.PatientName == "DOE^JOHN"
    assert answer.PatientBirthDate == "19700101"
    assert "OtherPatientIDs" in answer and not answer.OtherPatientIDs


def test_code_extensions_are_checked_character_by_character() -> None:
    assert can_carry(["", "ISO 2022 IR 87"], ["Yamada^Tarou=山田^太郎"])
    assert not can_carry(["", "ISO 2022 IR 87"], ["Wang=王^小东"])  # 东 is not in JIS X 0208
    assert can_carry(["GB18030"], ["Wang=王^小东"])
    assert not can_carry([], ["Müller"])
    assert can_carry([], ["Muller"])


@pytest.mark.parametrize("term", ["ISO_IR 999", "UTF-8", "latin1", "ISO 2022 IR 999"])
def test_an_undefined_character_set_term_is_refused_with_a_reason(term: str) -> None:
    ident = Dataset()
    ident.SpecificCharacterSet = ["", term] if term.startswith("ISO 2022") else term
    with pytest.raises(InvalidQuery, match="not a defined term"):
        requested_character_set(ident)


# -- DCMTK's findscu ---------------------------------------------------------------------


def dcmtk(tool: str, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(DCMTK / tool), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{tool} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


def address(server: Any) -> list[str]:
    return ["-aec", server.ae_title, server.host, str(server.port)]


def query_file(folder: Path, ds: Dataset, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=False)
    return path


def findscu(server: Any, folder: Path, ds: Dataset, name: str, model: str = "-P") -> list[Dataset]:
    out = folder / f"answers-{name}"
    out.mkdir(parents=True)
    dcmtk("findscu", model, "-X", "-od", out, *address(server), query_file(folder, ds, name))
    return [dcmread(p) for p in sorted(out.iterdir())]


@needs_dcmtk
def test_findscu_in_every_character_set(dicom_server: Any, tmp_path: Path) -> None:
    files = [write(tmp_path / "in", patient(case), f"{case.label}.dcm") for case in CASES]
    dcmtk("storescu", *address(dicom_server), *files)

    for case in CASES:
        # Asked in its own set: the answer is in that set, every group kept.
        [answer] = findscu(dicom_server, tmp_path, query(case, case.charset), case.label)
        assert answer.PatientID == case.patient_id, case.label
        assert str(answer.PatientName) == case.name, case.label
        assert _terms(answer.SpecificCharacterSet) == _terms(case.charset), case.label

        # Asked in Latin-1 (or in nothing): what Latin-1 cannot carry comes back in UTF-8.
        ascii_query = query(case, "ISO_IR 100", level="STUDY")
        ascii_query.PatientName = ""
        ascii_query.PatientID = case.patient_id
        [answer] = findscu(dicom_server, tmp_path, ascii_query, f"{case.label}-latin1", "-S")
        assert str(answer.PatientName) == case.name, case.label
        expected = "ISO_IR 100" if case.label == "latin1" else "ISO_IR 192"
        assert answer.SpecificCharacterSet == expected, case.label
        assert answer.StudyDescription == patient(case).StudyDescription


@needs_dcmtk
def test_findscu_with_an_undefined_character_set_is_refused(
    sqlite_dicom_server: Any, tmp_path: Path
) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 999"
    ds.QueryRetrieveLevel = "PATIENT"
    ds.PatientName = "A*"
    out = tmp_path / "answers"
    out.mkdir()
    result = dcmtk(
        "findscu", "-d", "-P", "-X", "-od", out, *address(sqlite_dicom_server),
        query_file(tmp_path, ds, "bad"), check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "0xc001" in output.lower(), output
    assert "is not a defined term" in output, output  # the Error Comment
    assert not list(out.iterdir())
    dcmtk("echoscu", *address(sqlite_dicom_server))  # still serving


# -- pynetdicom --------------------------------------------------------------------------


def pyfind(server: Any, identifier: Dataset, model: str) -> list[tuple[int, Dataset | None]]:
    ae = AE(ae_title="CHARSETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model)
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        return [(int(status.Status), ds) for status, ds in assoc.send_c_find(identifier, model)]
    finally:
        assoc.release()


def test_pynetdicom_in_every_character_set(sqlite_dicom_server: Any) -> None:
    archive = sqlite_dicom_server.archive
    from pydicom.filebase import DicomBytesIO

    for case in CASES:
        buffer = DicomBytesIO()
        patient(case).save_as(buffer, enforce_file_format=True)
        archive.store(buffer.getvalue(), origin="test")

    for case in CASES:
        answers = pyfind(
            sqlite_dicom_server,
            query(case, case.charset, level="STUDY"),
            StudyRootQueryRetrieveInformationModelFind,
        )
        matches = [ds for status, ds in answers if status == 0xFF00]
        assert [s for s, _ in answers][-1] == 0x0000
        assert len(matches) == 1, case.label
        [answer] = matches
        assert answer is not None
        assert str(answer.PatientName) == case.name, case.label
        assert _terms(answer.SpecificCharacterSet) == _terms(case.charset)
        assert answer.StudyDescription == patient(case).StudyDescription

    # A wildcard that matches none of them.
    miss = query(CASES[1], "ISO_IR 126")
    miss.PatientName = "Γιαν*"  # the given name, not the family name
    answers = pyfind(sqlite_dicom_server, miss, PatientRootQueryRetrieveInformationModelFind)
    assert [s for s, _ in answers] == [0x0000]

    # Only the ideographic group: refused with a reason, not answered with everything.
    only_ideographic = query(CASES[3], "GB18030")
    only_ideographic.PatientName = "=王*"
    [(status, _)] = pyfind(
        sqlite_dicom_server, only_ideographic, PatientRootQueryRetrieveInformationModelFind
    )
    assert status == 0xC001

    bad = query(CASES[0], "ISO_IR 999")
    [(status, _)] = pyfind(sqlite_dicom_server, bad, PatientRootQueryRetrieveInformationModelFind)
    assert status == 0xC001
