"""The archive's one answer to storage commitment, and studies declared complete early."""

from __future__ import annotations

from dicomgen import make_dataset, to_bytes, uid
from vesalius.container import Container
from vesalius.events import StudyStable
from vesalius.index import changes

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def test_commitment_answers_from_committed_rows_and_sop_class(container: Container) -> None:
    first = make_dataset()
    second = make_dataset(StudyInstanceUID=first.StudyInstanceUID)
    for ds in (first, second):
        container.archive.store(to_bytes(ds))
    absent = uid()
    present, missing = container.archive.commitment(
        [(CT, first.SOPInstanceUID), (MR, second.SOPInstanceUID), (CT, absent)]
    )
    assert present == [(CT, first.SOPInstanceUID)]
    assert missing == [(MR, second.SOPInstanceUID), (CT, absent)]


def test_a_study_declared_complete_is_stable_once(container: Container) -> None:
    ds = make_dataset()
    container.archive.store(to_bytes(ds))
    seen: list[StudyStable] = []
    container.events.subscribe(StudyStable, seen.append)
    study = container.archive.studies_of([ds.SOPInstanceUID])
    assert study == {ds.StudyInstanceUID}
    assert container.archive.declare_complete(study) == [ds.StudyInstanceUID]
    assert container.archive.declare_complete(study) == []  # already stable
    assert container.events.drain()
    assert [(e.study_instance_uid, e.reason) for e in seen] == [(ds.StudyInstanceUID, "complete")]
    with container.db.read() as session:
        kinds = [c.kind for c in changes.changes_since(session, 0, 100)]
    assert kinds.count("study_stable") == 1
