"""The worklist query on every database: name parts, accents, ID prefix, filters, sorting."""

from __future__ import annotations

from dicomgen import make_file
from vesalius.container import Container
from vesalius.index.worklist import WorklistFilters, search_patients


def ids(container: Container, **kw: object) -> list[str]:
    with container.db.read() as session:
        page = search_patients(session, WorklistFilters(**kw))  # type: ignore[arg-type]
    return [r.patient_id for r in page.rows]


def test_worklist_search_filter_sort(container: Container) -> None:
    store = container.archive.store
    store(make_file(PatientID="A1", PatientName="Müller^José", StudyDate="20240105", Modality="CT"))
    store(make_file(PatientID="A2", PatientName="MULLER^ANNA", StudyDate="20230101", Modality="MR"))
    store(make_file(PatientID="B7", PatientName="Smith^Jo", StudyDate="20220101", Modality="CT"))
    assert ids(container, text="muller") == ["A1", "A2"]  # newest study first
    assert ids(container, text="jose MÜLL") == ["A1"]
    assert ids(container, text="B") == ["B7"]  # ID prefix
    assert ids(container, text="%") == []
    assert ids(container, modality="CT") == ["A1", "B7"]
    assert ids(container, date_from="20221231", date_to="20231231") == ["A2"]
    assert ids(container, sort="name") == ["A2", "A1", "B7"]
    assert ids(container, text="mul", sort="name") == ["A2", "A1"]
    with container.db.read() as session:
        page = search_patients(session, WorklistFilters(per_page=2))
    assert (page.total, page.total_is_exact, len(page.rows)) == (3, True, 2)
    assert page.rows[0].num_studies == 1 and page.rows[0].last_study_date == "20240105"


def test_worklist_rows_show_the_last_study(container: Container) -> None:
    store = container.archive.store
    store(make_file(PatientID="L1", StudyDate="20200101", StudyDescription="Old", Modality="MR"))
    store(make_file(PatientID="L1", StudyDate="20240301", StudyDescription="New", Modality="CT"))
    store(make_file(PatientID="L1", StudyDate="", StudyDescription="Undated", Modality="US"))
    store(make_file(PatientID="L2", StudyDate="20220101", StudyDescription="", Modality="XA"))
    with container.db.read() as session:
        rows = {r.patient_id: r for r in search_patients(session, WorklistFilters()).rows}
    assert (rows["L1"].last_study_description, rows["L1"].last_study_modalities) == ("New", "CT")
    assert rows["L1"].num_studies == 3 and rows["L1"].last_study_date == "20240301"
    assert rows["L2"].last_study_description in (None, "")
    assert rows["L2"].last_study_modalities == "XA"


def test_audit_events_about_one_patient(container: Container) -> None:
    """The audit trail's patient filter on every database: the patient's pages (its ID in the
    path, however awkward) and accesses to its studies, nothing of a look-alike ID."""
    from vesalius.auth.audit import AuditRecord
    from vesalius.index.people import AuditFilters

    store = container.archive.store
    mine = make_file(PatientID="50%_a/b", StudyInstanceUID="1.2.3.100")
    store(mine)
    store(make_file(PatientID="50X_a/bc", StudyInstanceUID="1.2.3.200"))
    audit = container.audit
    for actor, obj, study in [
        ("u1", "GET /patients/50%_a/b", None),
        ("u1", "GET /api/patients/50%_a/b/studies", None),
        ("u2", "GET /dicom-web/studies/1.2.3.100/metadata", "1.2.3.100"),
        ("u3", "GET /patients/50X_a/bc", None),  # a look-alike: % and _ are no wildcards
        ("u3", "GET /patients/50%_a/b/more", None),
        ("u4", "GET /dicom-web/studies/1.2.3.200/metadata", "1.2.3.200"),
    ]:
        audit.record(
            AuditRecord(actor=actor, action="view", protocol="http", object=obj, study_uid=study)
        )
    found = audit.search(AuditFilters(patient="50%_a/b"))
    assert sorted(e["object"] for e in found) == [
        "GET /api/patients/50%_a/b/studies",
        "GET /dicom-web/studies/1.2.3.100/metadata",
        "GET /patients/50%_a/b",
    ]
    assert audit.search(AuditFilters(patient="nobody")) == []
    both = audit.search(AuditFilters(patient="50%_a/b", actor="u2"))
    assert [e["study_uid"] for e in both] == ["1.2.3.100"]
