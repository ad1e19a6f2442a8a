"""Queries through the archive on every database, against a small hand-made archive.

The archive holds three patients; each expected answer below was worked out by reading
the table in ``populated``, not by running the code.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from dicomgen import make_file
from vesalius.archive.query import build_query
from vesalius.container import Container
from vesalius.dicom import dicomjson
from vesalius.dicom.levels import Level
from vesalius.errors import InvalidQuery
from vesalius.index import imaging
from vesalius.index.models import Study

# patient id, name, birth date, study uid, date, time, accession, description, modality, series
ROWS = [
    ("P1", "DOE^JOHN", "19600101", "1.1", "20200110", "083000", "A1", "CHEST CT", "CT", "1.1.1"),
    ("P1", "DOE^JOHN", "19600101", "1.1", "20200110", "083000", "A1", "CHEST CT", "CT", "1.1.1"),
    ("P1", "DOE^JOHN", "19600101", "1.1", "20200110", "083000", "A1", "CHEST CT", "SR", "1.1.2"),
    ("P1", "DOE^JOHN", "19600101", "1.2", "20210505", "141500", "A2", "HEAD MR", "MR", "1.2.1"),
    ("P2", "Müller^Jürgen", "19751224", "2.1", "20201231", "235959", "B1", "Knee", "MR", "2.1.1"),
    ("P3", "DOEBLER^ANN", "", "3.1", "20190301", "0700", "", "chest ct", "CT", "3.1.1"),
]


@pytest.fixture
def populated(container: Container) -> Iterator[Container]:
    for i, (pid, name, birth, study, date, time, acc, desc, mod, series) in enumerate(ROWS):
        container.archive.store(
            make_file(
                PatientID=pid,
                PatientName=name,
                PatientBirthDate=birth,
                StudyInstanceUID=study,
                StudyDate=date,
                StudyTime=time,
                AccessionNumber=acc,
                StudyDescription=desc,
                Modality=mod,
                SeriesInstanceUID=series,
                SOPInstanceUID=f"{series}.{i}",
                InstanceNumber=i,
            )
        )
    yield container


def uids(results: list[dicomjson.DicomJson], keyword: str) -> list[str]:
    return sorted(dicomjson.first_string(r, keyword) or "" for r in results)


def studies(container: Container, **keys: str) -> list[str]:
    query = build_query(Level.STUDY, list(keys.items()))
    return uids(container.archive.find(query), "StudyInstanceUID")


def test_universal_matching_returns_everything(populated: Container) -> None:
    assert studies(populated) == ["1.1", "1.2", "2.1", "3.1"]
    assert studies(populated, PatientName="") == ["1.1", "1.2", "2.1", "3.1"]


def test_patient_name_wildcards_and_folding(populated: Container) -> None:
    assert studies(populated, PatientName="DOE*") == ["1.1", "1.2", "3.1"]
    assert studies(populated, PatientName="DOE^*") == ["1.1", "1.2"]
    assert studies(populated, PatientName="doe^john") == ["1.1", "1.2"]  # case-insensitive PN
    assert studies(populated, PatientName="muller*") == ["2.1"]  # accents folded
    assert studies(populated, PatientName="D?E^JOHN") == ["1.1", "1.2"]


def test_person_names_case_sensitive_when_configured(populated: Container) -> None:
    populated.settings.case_insensitive_pn = False
    assert studies(populated, PatientName="doe*") == []
    assert studies(populated, PatientName="DOE*") == ["1.1", "1.2", "3.1"]


def test_other_strings_are_case_sensitive(populated: Container) -> None:
    assert studies(populated, StudyDescription="CHEST CT") == ["1.1"]
    assert studies(populated, StudyDescription="*ct") == ["3.1"]


def test_date_and_time_ranges(populated: Container) -> None:
    assert studies(populated, StudyDate="20200101-20201231") == ["1.1", "2.1"]
    assert studies(populated, StudyDate="20200110") == ["1.1"]
    assert studies(populated, StudyDate="-20191231") == ["3.1"]
    assert studies(populated, StudyDate="20210101-") == ["1.2"]
    assert studies(populated, StudyTime="0800-1500") == ["1.1", "1.2"]
    assert studies(populated, StudyTime="2300-") == ["2.1"]


def test_uid_lists(populated: Container) -> None:
    assert studies(populated, StudyInstanceUID="1.2\\3.1\\9.9") == ["1.2", "3.1"]


def test_modalities_in_study_and_study_level_modality(populated: Container) -> None:
    assert studies(populated, ModalitiesInStudy="MR") == ["1.2", "2.1"]
    assert studies(populated, ModalitiesInStudy="SR\\MR") == ["1.1", "1.2", "2.1"]
    assert studies(populated, Modality="CT") == ["1.1", "3.1"]  # read as ModalitiesInStudy


def test_empty_attribute_does_not_match_a_value(populated: Container) -> None:
    assert studies(populated, AccessionNumber="*1") == ["1.1", "2.1"]
    assert studies(populated, PatientBirthDate="19000101-20991231") == ["1.1", "1.2", "2.1"]


def test_combined_keys_must_all_match(populated: Container) -> None:
    with pytest.raises(InvalidQuery, match="not a date"):  # DA takes no wildcard
        studies(populated, StudyDate="2020*")
    assert studies(populated, PatientName="DOE*", ModalitiesInStudy="CT") == ["1.1", "3.1"]


def test_computed_counts(populated: Container) -> None:
    [study] = populated.archive.find(build_query(Level.STUDY, [("StudyInstanceUID", "1.1")]))
    assert dicomjson.value_strings(study["00201206"]) == ["2"]  # NumberOfStudyRelatedSeries
    assert dicomjson.value_strings(study["00201208"]) == ["3"]  # NumberOfStudyRelatedInstances
    assert dicomjson.value_strings(study["00080061"]) == ["CT", "SR"]  # ModalitiesInStudy
    assert dicomjson.value_strings(study["00201200"]) == ["2"]  # NumberOfPatientRelatedStudies
    assert dicomjson.value_strings(study["00201202"]) == ["3"]  # ...RelatedSeries
    assert dicomjson.value_strings(study["00201204"]) == ["4"]  # ...RelatedInstances


def test_patient_level(populated: Container) -> None:
    results = populated.archive.find(build_query(Level.PATIENT, [("PatientName", "*")]))
    assert uids(results, "PatientID") == ["P1", "P2", "P3"]
    [p1] = populated.archive.find(build_query(Level.PATIENT, [("PatientID", "P1")]))
    assert dicomjson.value_strings(p1["00201200"]) == ["2"]  # NumberOfPatientRelatedStudies
    assert dicomjson.value_strings(p1["00201204"]) == ["4"]  # NumberOfPatientRelatedInstances


def test_series_level(populated: Container) -> None:
    query = build_query(Level.SERIES, [("StudyInstanceUID", "1.1"), ("Modality", "")])
    results = populated.archive.find(query)
    assert uids(results, "SeriesInstanceUID") == ["1.1.1", "1.1.2"]
    counts = {
        dicomjson.first_string(r, "SeriesInstanceUID"): dicomjson.value_strings(r["00201209"])
        for r in results
    }
    assert counts == {"1.1.1": ["2"], "1.1.2": ["1"]}


def test_instance_level_with_unindexed_attribute(populated: Container) -> None:
    query = build_query(Level.IMAGE, [("SeriesInstanceUID", "1.1.1"), ("Rows", "16")])
    assert uids(populated.archive.find(query), "SOPInstanceUID") == ["1.1.1.0", "1.1.1.1"]
    query = build_query(Level.IMAGE, [("StudyInstanceUID", "1.1"), ("Rows", "17")])
    assert populated.archive.find(query) == []
    query = build_query(Level.IMAGE, [("InstanceNumber", "3")])
    assert uids(populated.archive.find(query), "SOPInstanceUID") == ["1.2.1.3"]


def test_limit_and_offset(populated: Container) -> None:
    all_studies = populated.archive.find(build_query(Level.STUDY, []))
    page = populated.archive.find(build_query(Level.STUDY, [], limit=2, offset=1))
    assert page == all_studies[1:3]


def test_a_query_shape_seen_before_answers_with_its_own_values(populated: Container) -> None:
    """Statements are built once per shape of query and run with each query's values."""
    built = imaging._find_statement.cache_info()
    assert studies(populated, PatientID="P1", StudyDate="20210101-") == ["1.2"]
    assert studies(populated, PatientID="P2", StudyDate="20200101-") == ["2.1"]
    assert studies(populated, PatientID="P1", StudyDate="-20201231") == ["1.1"]  # other shape
    assert studies(populated, StudyInstanceUID="1.1\\2.1") == ["1.1", "2.1"]
    assert studies(populated, StudyInstanceUID="1.2\\3.1") == ["1.2", "3.1"]
    assert studies(populated, StudyInstanceUID="1.2\\3.1\\2.1") == ["1.2", "2.1", "3.1"]
    assert studies(populated, PatientName="doe*") == ["1.1", "1.2", "3.1"]
    assert studies(populated, PatientName="müller*") == ["2.1"]
    assert studies(populated, ModalitiesInStudy="SR\\MR") == ["1.1", "1.2", "2.1"]
    assert studies(populated, ModalitiesInStudy="CT\\XA") == ["1.1", "3.1"]
    every = populated.archive.find(build_query(Level.STUDY, []))
    for offset in (1, 2, 3):
        page = populated.archive.find(build_query(Level.STUDY, [], limit=1, offset=offset))
        assert page == every[offset : offset + 1]
        assert populated.archive.find(build_query(Level.STUDY, [], offset=offset)) == every[offset:]
    after = imaging._find_statement.cache_info()
    assert after.hits - built.hits >= 4  # the second query of each shape reused the first's


def test_a_find_in_a_transaction_sees_its_own_writes(populated: Container) -> None:
    """A fresh read session's SELECT runs outside it; one that began reads in its own."""
    query = build_query(Level.STUDY, [("StudyDate", "20990101")])

    class Undo(Exception):
        pass

    with pytest.raises(Undo), populated.db.write() as session:
        session.execute(
            update(Study).where(Study.study_instance_uid == "3.1").values(study_date="20990101")
        )
        found = imaging.find(session, Level.STUDY, query.constraints, fold_pn=True)
        assert [dicomjson.first_string(m.study or {}, "StudyInstanceUID") for m in found] == ["3.1"]
        raise Undo  # rolled back
    assert populated.archive.find(query) == []


def test_bad_queries_say_what_is_wrong() -> None:
    with pytest.raises(InvalidQuery, match="StudyDate"):
        build_query(Level.STUDY, [("StudyDate", "2020-01-01x")])
    with pytest.raises(InvalidQuery, match="NoSuchKeyword"):
        build_query(Level.STUDY, [("NoSuchKeyword", "1")])
