"""The remote PACS mirror's questions and changes (its SQL lives here; models in
:mod:`vesalius.index.mirror_models`).

A sync writes one batch of studies per transaction (:func:`apply_batch`) and, after a listing
that completed, removes what the remote no longer lists and moves the watermark in one last
transaction (:func:`finish_sync`): a sync that fails half-way leaves whole batches behind and
the watermark where it was, so the next sync lists the same range again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, exists, func, select, update
from sqlalchemy.orm import Session

from vesalius.dicom import dicomjson
from vesalius.dicom.dicomjson import DicomJson
from vesalius.dicom.matching import Constraint
from vesalius.index.imaging import _cut, _patient_values, _study_values
from vesalius.index.jobs_models import Job
from vesalius.index.lookup import STUDY_FROM_SERIES, matcher_sql
from vesalius.index.mirror_models import (
    MirrorState,
    RemotePatient,
    RemoteRetrieval,
    RemoteSeries,
    RemoteStudy,
)
from vesalius.index.models import Study

LOCAL = "local"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# -- sync ----------------------------------------------------------------------------------------


@dataclass
class MirroredSeries:
    series_instance_uid: str
    modality: str | None
    series_number: str | None
    series_description: str | None
    num_instances: int


@dataclass
class MirroredStudy:
    """One study as the remote listed it (validated DICOM JSON) and its series."""

    study_instance_uid: str
    patient_id: str
    data: DicomJson  # patient and study level attributes
    num_series: int
    num_instances: int
    modalities: list[str]
    digest: str
    series: list[MirroredSeries] = field(default_factory=list)


@dataclass(frozen=True)
class MirrorStateRow:
    source: str
    watermark: str | None
    sync_number: int
    studies: int
    last_full_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    last_success_at: dt.datetime | None
    last_error: str | None


def get_state(session: Session, source: str) -> MirrorStateRow:
    row = session.get(MirrorState, source)
    if row is None:
        return MirrorStateRow(source, None, 0, 0, None, None, None, None)
    return MirrorStateRow(
        row.source,
        row.watermark,
        row.sync_number,
        row.studies,
        row.last_full_at,
        row.last_attempt_at,
        row.last_success_at,
        row.last_error,
    )


def begin_sync(session: Session, source: str) -> int:
    """Number a new sync of *source*; rows it lists are marked with this number."""
    row = session.get(MirrorState, source, with_for_update=True)
    if row is None:
        row = MirrorState(source=source, sync_number=0, studies=0)
        session.add(row)
    row.sync_number = (row.sync_number or 0) + 1
    row.last_attempt_at = _now()
    session.flush()
    return int(row.sync_number)


def note_failure(session: Session, source: str, error: str) -> None:
    row = session.get(MirrorState, source)
    if row is None:
        row = MirrorState(source=source, sync_number=0, studies=0)
        session.add(row)
    row.last_attempt_at = _now()
    row.last_error = error[:4000]


def known_digests(session: Session, source: str, uids: Sequence[str]) -> dict[str, str]:
    if not uids:
        return {}
    rows = session.execute(
        select(RemoteStudy.study_instance_uid, RemoteStudy.digest).where(
            RemoteStudy.source == source, RemoteStudy.study_instance_uid.in_(list(uids))
        )
    )
    return {uid: digest for uid, digest in rows}


def _patient_row(source: str, study: MirroredStudy) -> dict[str, Any]:
    values = _patient_values(study.data)
    values.pop("attributes")
    return {"source": source, "patient_id": study.patient_id, **values}


def _study_row(source: str, study: MirroredStudy, sync_number: int, now: Any) -> dict[str, Any]:
    values = _study_values(study.data)
    values.pop("attributes")
    return {
        **values,
        "source": source,
        "study_instance_uid": study.study_instance_uid,
        "modalities_in_study": _cut("\\".join(study.modalities), 64),
        "num_series": study.num_series,
        "num_instances": study.num_instances,
        "attributes": dicomjson.dumps(study.data),
        "digest": study.digest,
        "seen_sync": sync_number,
        "synced_at": now,
    }


# Core statements on the tables, run with a list of parameters (executemany).
_PATIENTS = RemotePatient.__table__
_STUDIES = RemoteStudy.__table__
_UPDATE_PATIENT = (
    _PATIENTS.update()
    .where(_PATIENTS.c.id == bindparam("b_id"))
    .values(
        patient_name=bindparam("b_patient_name"),
        patient_name_folded=bindparam("b_patient_name_folded"),
        patient_birth_date=bindparam("b_patient_birth_date"),
        patient_sex=bindparam("b_patient_sex"),
    )
)
_STUDY_COLUMNS = (
    "patient_pk",
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician_name",
    "referring_physician_name_folded",
    "modalities_in_study",
    "num_series",
    "num_instances",
    "attributes",
    "digest",
    "seen_sync",
    "synced_at",
)
_UPDATE_STUDY = (
    _STUDIES.update()
    .where(_STUDIES.c.id == bindparam("b_id"))
    .values({c: bindparam(f"b_{c}") for c in _STUDY_COLUMNS})
)
_RECOUNT = (
    _PATIENTS.update()
    .where(_PATIENTS.c.id == bindparam("b_id"))
    .values(num_studies=bindparam("b_count"), last_study_date=bindparam("b_last"))
)


def _prefixed(values: dict[str, Any]) -> dict[str, Any]:
    return {f"b_{k}": v for k, v in values.items()}


def apply_batch(
    session: Session,
    source: str,
    sync_number: int,
    changed: Sequence[MirroredStudy],
    unchanged: Sequence[str],
) -> None:
    """Write one batch: new and changed studies with their series and patients; the others
    only marked as listed by this sync. A study the archive holds itself (with at least as
    many instances as the remote lists) is not kept as a remote study.

    Rows are written with one statement per kind (executemany), not one per study."""
    now = _now()
    local = _local_counts(session, [s.study_instance_uid for s in changed] + list(unchanged))
    if local:
        held = (
            select(RemoteStudy.id)
            .join(Study, Study.study_instance_uid == RemoteStudy.study_instance_uid)
            .where(
                RemoteStudy.source == source,
                RemoteStudy.study_instance_uid.in_(list(local)),
                Study.num_instances >= RemoteStudy.num_instances,
            )
        )
        _drop_studies(session, held)
    keep = [
        s
        for s in changed
        if s.study_instance_uid not in local or local[s.study_instance_uid] < s.num_instances
    ]
    touched: set[int] = set()
    # patients of the batch, by their Patient ID (the newest listing of each wins)
    newest: dict[str, MirroredStudy] = {}
    for study in keep:
        newest[study.patient_id] = study
    patients = _patient_ids(session, source, list(newest))
    fresh = [_patient_row(source, s) for pid, s in newest.items() if pid not in patients]
    known = [
        {"b_id": patients[pid], **_prefixed(_patient_row(source, s))}
        for pid, s in newest.items()
        if pid in patients
    ]
    for row in known:
        del row["b_source"], row["b_patient_id"]
    if known:
        session.execute(_UPDATE_PATIENT, known)
    if fresh:
        session.execute(
            RemotePatient.__table__.insert(), [{**row, "num_studies": 0} for row in fresh]
        )
        patients.update(_patient_ids(session, source, [row["patient_id"] for row in fresh]))
    # studies: update the known ones, insert the others; their series replaced
    uids = [s.study_instance_uid for s in keep]
    existing = _study_ids(session, source, uids)
    if existing:
        touched.update(patient for _, patient in existing.values())
        ids = [pk for pk, _ in existing.values()]
        for start in range(0, len(ids), 500):
            session.execute(
                delete(RemoteSeries).where(RemoteSeries.study_pk.in_(ids[start : start + 500]))
            )
    inserts, updates = [], []
    for study in keep:
        values = _study_row(source, study, sync_number, now)
        values["patient_pk"] = patients[study.patient_id]
        touched.add(values["patient_pk"])
        if study.study_instance_uid in existing:
            row = _prefixed({c: values[c] for c in _STUDY_COLUMNS})
            row["b_id"] = existing[study.study_instance_uid][0]
            updates.append(row)
        else:
            inserts.append(values)
    if updates:
        session.execute(_UPDATE_STUDY, updates)
    if inserts:
        session.execute(RemoteStudy.__table__.insert(), inserts)
    study_pks = {uid: pk for uid, (pk, _) in _study_ids(session, source, uids).items()}
    series_rows = [
        {
            "study_pk": study_pks[study.study_instance_uid],
            "series_instance_uid": _cut(s.series_instance_uid, 64),
            "modality": _cut(s.modality, 16),
            "series_number": _cut(s.series_number, 16),
            "series_description": _cut(s.series_description, 64),
            "num_instances": s.num_instances,
        }
        for study in keep
        for s in study.series
    ]
    if series_rows:
        session.execute(RemoteSeries.__table__.insert(), series_rows)
    seen = [u for u in unchanged if u not in local]
    for start in range(0, len(seen), 500):
        session.execute(
            update(RemoteStudy)
            .where(
                RemoteStudy.source == source,
                RemoteStudy.study_instance_uid.in_(seen[start : start + 500]),
            )
            .values(seen_sync=sync_number)
        )
    _recount_patients(session, touched)


def _local_counts(session: Session, uids: Sequence[str]) -> dict[str, int]:
    """The studies of *uids* this archive holds itself, with their instance counts."""
    out: dict[str, int] = {}
    for start in range(0, len(uids), 500):
        chunk = list(uids[start : start + 500])
        out.update(
            session.execute(
                select(Study.study_instance_uid, Study.num_instances).where(
                    Study.study_instance_uid.in_(chunk)
                )
            ).all()
        )
    return out


def _patient_ids(session: Session, source: str, patient_ids: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for start in range(0, len(patient_ids), 500):
        chunk = patient_ids[start : start + 500]
        out.update(
            session.execute(
                select(RemotePatient.patient_id, RemotePatient.id).where(
                    RemotePatient.source == source, RemotePatient.patient_id.in_(chunk)
                )
            ).all()
        )
    return out


def _study_ids(session: Session, source: str, uids: list[str]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        for uid, pk, patient_pk in session.execute(
            select(RemoteStudy.study_instance_uid, RemoteStudy.id, RemoteStudy.patient_pk).where(
                RemoteStudy.source == source, RemoteStudy.study_instance_uid.in_(chunk)
            )
        ):
            out[uid] = (pk, patient_pk)
    return out


def _drop_studies(session: Session, study_pks: Any) -> int:
    """Remove remote studies (a select of their ids) and recount their patients."""
    rows = session.execute(
        select(RemoteStudy.id, RemoteStudy.patient_pk).where(RemoteStudy.id.in_(study_pks))
    ).all()
    if not rows:
        return 0
    ids = [pk for pk, _ in rows]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        session.execute(delete(RemoteSeries).where(RemoteSeries.study_pk.in_(chunk)))
        session.execute(delete(RemoteStudy).where(RemoteStudy.id.in_(chunk)))
    _recount_patients(session, {patient for _, patient in rows})
    return len(rows)


def _recount_patients(session: Session, patient_pks: Iterable[int]) -> None:
    pks = sorted(set(patient_pks))
    for start in range(0, len(pks), 500):
        chunk = pks[start : start + 500]
        counts = {
            pk: (count, last)
            for pk, count, last in session.execute(
                select(
                    RemoteStudy.patient_pk,
                    func.count(RemoteStudy.id),
                    func.max(RemoteStudy.study_date),
                )
                .where(RemoteStudy.patient_pk.in_(chunk))
                .group_by(RemoteStudy.patient_pk)
            )
        }
        empty = [pk for pk in chunk if pk not in counts]
        if empty:
            session.execute(delete(RemotePatient).where(RemotePatient.id.in_(empty)))
        if counts:
            session.execute(
                _RECOUNT,
                [
                    {"b_id": pk, "b_count": count, "b_last": last}
                    for pk, (count, last) in counts.items()
                ],
            )


def finish_sync(
    session: Session,
    source: str,
    sync_number: int,
    *,
    date_from: str | None,
    watermark: str,
    full: bool,
) -> int:
    """After a complete listing: remove the studies of the listed range it no longer holds,
    move the watermark, note the success. Returns how many studies were removed."""
    stale = select(RemoteStudy.id).where(
        RemoteStudy.source == source, RemoteStudy.seen_sync < sync_number
    )
    if date_from is not None:
        stale = stale.where(RemoteStudy.study_date >= date_from)
    removed = _drop_studies(session, stale)
    row = session.get(MirrorState, source, with_for_update=True)
    assert row is not None  # begin_sync made it
    now = _now()
    row.watermark = watermark
    row.last_success_at = now
    row.last_error = None
    if full:
        row.last_full_at = now
    row.studies = session.execute(
        select(func.count(RemoteStudy.id)).where(RemoteStudy.source == source)
    ).scalar_one()
    return removed


def forget_study(session: Session, source: str | None, study_uid: str) -> None:
    """The study is local now (retrieved): its remote rows go."""
    query = select(RemoteStudy.id).where(RemoteStudy.study_instance_uid == study_uid)
    if source is not None:
        query = query.where(RemoteStudy.source == source)
    _drop_studies(session, query)


def forget_source(session: Session, source: str) -> int:
    removed = _drop_studies(session, select(RemoteStudy.id).where(RemoteStudy.source == source))
    session.execute(delete(MirrorState).where(MirrorState.source == source))
    return removed


def any_remote(session: Session) -> bool:
    """Whether the mirror holds any remote study at all (most archives: no)."""
    return session.execute(select(RemotePatient.id).limit(1)).first() is not None


# -- one remote study ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteStudyRow:
    source: str
    study_instance_uid: str
    patient_id: str
    num_series: int
    num_instances: int


def remote_study(session: Session, source: str, study_uid: str) -> RemoteStudyRow | None:
    row = session.execute(
        select(
            RemoteStudy.source,
            RemoteStudy.study_instance_uid,
            RemotePatient.patient_id,
            RemoteStudy.num_series,
            RemoteStudy.num_instances,
        )
        .join(RemotePatient, RemoteStudy.patient_pk == RemotePatient.id)
        .where(RemoteStudy.source == source, RemoteStudy.study_instance_uid == study_uid)
    ).first()
    return RemoteStudyRow(*row) if row else None


# -- QIDO-RS over the mirror ---------------------------------------------------------------------

_COLUMNS: dict[str, tuple[Any, Any]] = {
    "PatientName": (RemotePatient.patient_name, RemotePatient.patient_name_folded),
    "PatientID": (RemotePatient.patient_id, None),
    "PatientBirthDate": (RemotePatient.patient_birth_date, None),
    "PatientSex": (RemotePatient.patient_sex, None),
    "StudyInstanceUID": (RemoteStudy.study_instance_uid, None),
    "StudyDate": (RemoteStudy.study_date, None),
    "StudyTime": (RemoteStudy.study_time, None),
    "AccessionNumber": (RemoteStudy.accession_number, None),
    "StudyID": (RemoteStudy.study_id, None),
    "StudyDescription": (RemoteStudy.study_description, None),
    "ReferringPhysicianName": (
        RemoteStudy.referring_physician_name,
        RemoteStudy.referring_physician_name_folded,
    ),
}


def remote_is_indexed(keyword: str) -> bool:
    return keyword in _COLUMNS or keyword in STUDY_FROM_SERIES


def _remote_condition(constraint: Constraint, *, fold_pn: bool) -> ColumnElement[bool]:
    if constraint.keyword in STUDY_FROM_SERIES:  # ModalitiesInStudy: through the series
        inner = matcher_sql(constraint.matcher, RemoteSeries.modality, fold=False)
        return exists(select(RemoteSeries.id).where(RemoteSeries.study_pk == RemoteStudy.id, inner))
    column, folded = _COLUMNS[constraint.keyword]
    if fold_pn and folded is not None:
        return matcher_sql(constraint.matcher, folded, fold=True)
    return matcher_sql(constraint.matcher, column, fold=False)


@dataclass
class RemoteMatch:
    source: str
    data: DicomJson  # the stored attributes with the remote's counts


def find_remote_studies(
    session: Session,
    constraints: Sequence[Constraint],
    *,
    source: str | None,
    fold_pn: bool,
    limit: int | None = None,
    offset: int = 0,
) -> list[RemoteMatch]:
    """Remote studies matching the (indexed) constraints, in mirror order; the caller
    matches the others on the JSON (and then applies limit and offset itself)."""
    query = select(
        RemoteStudy.source,
        RemoteStudy.attributes,
        RemoteStudy.num_series,
        RemoteStudy.num_instances,
        RemoteStudy.modalities_in_study,
    ).join(RemotePatient, RemoteStudy.patient_pk == RemotePatient.id)
    # the patient's source named, so that a PatientID is looked up in the unique
    # (source, patient_id) index
    if source is not None:
        query = query.where(RemoteStudy.source == source, RemotePatient.source == source)
    else:
        query = query.where(RemotePatient.source.in_(select(MirrorState.source)))
    for constraint in constraints:
        if remote_is_indexed(constraint.keyword):
            query = query.where(_remote_condition(constraint, fold_pn=fold_pn))
    query = query.order_by(RemoteStudy.id)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    found = []
    for name, attributes, num_series, num_instances, modalities in session.execute(query):
        data = dicomjson.loads(attributes)
        data[dicomjson.tag_key("NumberOfStudyRelatedSeries")] = dicomjson.element(
            "NumberOfStudyRelatedSeries", [num_series]
        )
        data[dicomjson.tag_key("NumberOfStudyRelatedInstances")] = dicomjson.element(
            "NumberOfStudyRelatedInstances", [num_instances]
        )
        data[dicomjson.tag_key("ModalitiesInStudy")] = dicomjson.element(
            "ModalitiesInStudy", modalities.split("\\") if modalities else []
        )
        found.append(RemoteMatch(name, data))
    return found


# -- retrievals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalRow:
    id: int
    source: str
    study_instance_uid: str
    job_id: int | None
    state: str
    method: str | None
    total: int | None
    done: int
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


_INTERRUPTED = "interrupted: its job ended without finishing it (the server stopped?)"


def _retrieval(row: RemoteRetrieval, session: Session | None = None) -> RetrievalRow:
    """The row as stored; an unfinished retrieval whose job is over reads as failed."""
    if session is not None and row.state in ("queued", "running") and row.job_id is not None:
        job_state = session.execute(select(Job.state).where(Job.id == row.job_id)).scalar()
        if job_state is None or job_state in ("done", "dead", "cancelled"):
            return replace(_retrieval(row), state="failed", error=row.error or _INTERRUPTED)
    return RetrievalRow(
        row.id,
        row.source,
        row.study_instance_uid,
        row.job_id,
        row.state,
        row.method,
        row.total,
        row.done,
        row.error,
        row.created_at,
        row.started_at,
        row.finished_at,
    )


def open_retrieval(session: Session, source: str, study_uid: str) -> tuple[RetrievalRow, bool]:
    """The unfinished retrieval of this study, or a new one (True when new)."""
    row = session.execute(
        select(RemoteRetrieval)
        .where(
            RemoteRetrieval.source == source,
            RemoteRetrieval.study_instance_uid == study_uid,
            RemoteRetrieval.state.in_(("queued", "running")),
        )
        .order_by(RemoteRetrieval.id.desc())
        .limit(1)
    ).scalar()
    if row is not None:
        current = _retrieval(row, session)
        if current.state != "failed":
            return current, False
        row.state, row.error, row.finished_at = "failed", current.error, _now()
    row = RemoteRetrieval(
        source=source, study_instance_uid=study_uid, state="queued", done=0, created_at=_now()
    )
    session.add(row)
    session.flush()
    return _retrieval(row), True


def set_retrieval_job(session: Session, retrieval_id: int, job_id: int | None) -> None:
    session.execute(
        update(RemoteRetrieval).where(RemoteRetrieval.id == retrieval_id).values(job_id=job_id)
    )


def get_retrieval(session: Session, retrieval_id: int) -> RetrievalRow | None:
    row = session.get(RemoteRetrieval, retrieval_id)
    return _retrieval(row, session) if row else None


def last_retrieval(session: Session, source: str, study_uid: str) -> RetrievalRow | None:
    row = session.execute(
        select(RemoteRetrieval)
        .where(RemoteRetrieval.source == source, RemoteRetrieval.study_instance_uid == study_uid)
        .order_by(RemoteRetrieval.id.desc())
        .limit(1)
    ).scalar()
    return _retrieval(row, session) if row else None


def update_retrieval(session: Session, retrieval_id: int, **values: Any) -> None:
    session.execute(
        update(RemoteRetrieval).where(RemoteRetrieval.id == retrieval_id).values(**values)
    )
