"""The imaging index's questions and changes, in domain terms (all of its SQL lives here).

Writes keep the hierarchy's counters (studies, series and instances per patient, ...) in the
same transaction as the rows they count, so answers never need a COUNT over instances.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vesalius.dicom import dicomjson
from vesalius.dicom.dicomjson import DicomJson, first_string
from vesalius.dicom.levels import LEVEL_ATTRIBUTES, Level
from vesalius.dicom.matching import (
    Constraint,
    MatchingError,
    fold_text,
    normalize_date,
    normalize_time,
)
from vesalius.errors import SeriesConflict
from vesalius.index import changes
from vesalius.index.changes import ChangeKind, NewChange
from vesalius.index.lookup import condition, condition_plan, condition_sql, is_indexed
from vesalius.index.models import Instance, Patient, Series, Study
from vesalius.index.prepared import Prepared, insert_row
from vesalius.storage.base import BlobInfo

log = logging.getLogger(__name__)

LEVEL_MODEL = {
    Level.PATIENT: Patient,
    Level.STUDY: Study,
    Level.SERIES: Series,
    Level.IMAGE: Instance,
}


def _cut(value: str | None, length: int) -> str | None:
    """Column values are cut to the column size; the full value stays in the JSON."""
    if value is None:
        return None
    value = value.strip()
    return value[:length] if value else None


def _date(value: str | None) -> str | None:
    try:
        return normalize_date(value)[:8] or None if value else None
    except MatchingError:
        return None


def _time(value: str | None) -> str | None:
    try:
        return normalize_time(value)[:16] or None if value else None
    except MatchingError:
        return None


@dataclass(frozen=True)
class InstanceRecord:
    """An archived instance, enough to find its file and send it."""

    id: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    digest: str  # <algorithm>:<hex> (vesalius.storage.digest)
    study_instance_uid: str
    series_instance_uid: str


_RECORD_COLUMNS = (
    Instance.id,
    Instance.sop_instance_uid,
    Instance.sop_class_uid,
    Instance.transfer_syntax_uid,
    Instance.blob_key,
    Instance.size,
    Instance.digest,
    Study.study_instance_uid,
    Series.series_instance_uid,
)


# Rows read by position only: SQLAlchemy need not map a cached compilation's result columns
# to each new statement's (``_adapt_to_context``, a quarter of a small C-FIND's execute; the
# ORM sets the same option on its own queries).
BY_POSITION = {"_result_disable_adapt_to_context": True}


@functools.cache
def _record_query() -> Select[Any]:
    """Instance records joined to their series and study (built once: see _find_base)."""
    return (
        select(*_RECORD_COLUMNS)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .execution_options(**BY_POSITION)
    )


def get_instance(session: Session, sop_instance_uid: str) -> InstanceRecord | None:
    row = session.execute(
        _record_query().where(Instance.sop_instance_uid == sop_instance_uid)
    ).first()
    return InstanceRecord(*row) if row else None


def _json_attrs(data: DicomJson, level: Level) -> str:
    return dicomjson.dumps(dicomjson.subset(data, LEVEL_ATTRIBUTES[level]))


def _patient_values(data: DicomJson) -> dict[str, Any]:
    name = first_string(data, "PatientName")
    return {
        "patient_name": _cut(name, 256),
        "patient_name_folded": _cut(fold_text(name), 256) if name else None,
        "patient_birth_date": _date(first_string(data, "PatientBirthDate")),
        "patient_sex": _cut(first_string(data, "PatientSex"), 16),
        "attributes": _json_attrs(data, Level.PATIENT),
    }


def _study_values(data: DicomJson) -> dict[str, Any]:
    referring = first_string(data, "ReferringPhysicianName")
    return {
        "study_date": _date(first_string(data, "StudyDate")),
        "study_time": _time(first_string(data, "StudyTime")),
        "accession_number": _cut(first_string(data, "AccessionNumber"), 64),
        "study_id": _cut(first_string(data, "StudyID"), 64),
        "study_description": _cut(first_string(data, "StudyDescription"), 64),
        "referring_physician_name": _cut(referring, 256),
        "referring_physician_name_folded": _cut(fold_text(referring), 256) if referring else None,
        "attributes": _json_attrs(data, Level.STUDY),
    }


def _series_values(data: DicomJson) -> dict[str, Any]:
    return {
        "modality": _cut(first_string(data, "Modality"), 16),
        "series_number": _cut(first_string(data, "SeriesNumber"), 16),
        "series_description": _cut(first_string(data, "SeriesDescription"), 64),
        "body_part_examined": _cut(first_string(data, "BodyPartExamined"), 64),
        "series_date": _date(first_string(data, "SeriesDate")),
        "series_time": _time(first_string(data, "SeriesTime")),
        "attributes": _json_attrs(data, Level.SERIES),
    }


def _instance_values(data: DicomJson) -> dict[str, Any]:
    return {
        "sop_class_uid": first_string(data, "SOPClassUID"),
        "instance_number": _cut(first_string(data, "InstanceNumber"), 16),
        "metadata_json": dicomjson.dumps(data),
    }


# The lookups by unique key of patients, studies and series, built on first use (see
# vesalius.index.prepared; their inserts are prepared.insert_row).
_LOOKUPS: dict[Any, Prepared] = {}


def _lookup_id(conn: Connection, model: Any, key_column: Any, key: str) -> int | None:
    statement = _LOOKUPS.get(key_column)
    if statement is None:
        statement = _LOOKUPS[key_column] = Prepared(
            select(model.id).where(key_column == bindparam("key"))
        )
    cursor = statement.run(conn, {"key": key})
    row = cursor.fetchone()
    cursor.close()
    return None if row is None else int(row[0])


def _get_or_create(
    conn: Connection, model: Any, key_column: Any, key: str, values: dict[str, Any]
) -> tuple[int, bool]:
    """The id of the row with this unique key, creating it; True when it was created."""
    found = _lookup_id(conn, model, key_column, key)
    if found is not None:
        return found, False
    try:
        row = {key_column.key: key, **values}
        return insert_row(conn, model.__table__, row, may_conflict=True), True
    except IntegrityError:
        # Another association created it between our select and insert.
        found = _lookup_id(conn, model, key_column, key)
        assert found is not None, f"{model.__name__} {key} neither inserted nor found"
        return found, False


_SERIES_LOOKUP = (
    select(Series.id, Series.study_pk, Study.patient_pk, Study.study_instance_uid)
    .join(Study, Series.study_pk == Study.id)
    .where(Series.series_instance_uid == bindparam("uid"))
)
_STUDY_LOOKUP = select(Study.id, Study.patient_pk).where(
    Study.study_instance_uid == bindparam("uid")
)


# The statements of every store, built once (building them costs more than running them) and
# run on the driver's cursor (see vesalius.index.prepared).
_SERIES_LOOKUP_FAST = Prepared(_SERIES_LOOKUP)
_STUDY_LOOKUP_FAST = Prepared(_STUDY_LOOKUP)
_COUNT_SERIES = Prepared(
    update(Series)
    .where(Series.id == bindparam("b_pk"))
    .values(num_instances=Series.num_instances + 1)
)
_COUNT_STUDY = {
    new_series: Prepared(
        update(Study)
        .where(Study.id == bindparam("b_pk"))
        .values(
            num_instances=Study.num_instances + 1,
            updated_at=bindparam("b_now"),
            stable_at=None,
            **({"num_series": Study.num_series + 1} if new_series else {}),
        )
    )
    for new_series in (False, True)
}
_COUNT_PATIENT = {
    (new_series, new_study): Prepared(
        update(Patient)
        .where(Patient.id == bindparam("b_pk"))
        .values(
            num_instances=Patient.num_instances + 1,
            **({"num_series": Patient.num_series + 1} if new_series else {}),
            **({"num_studies": Patient.num_studies + 1} if new_study else {}),
        )
    )
    for new_series in (False, True)
    for new_study in (False, True)
}


def _run(statement: Prepared, conn: Connection, params: dict[str, Any]) -> None:
    statement.run(conn, params).close()


def add_instance(
    session: Session,
    data: DicomJson,
    transfer_syntax_uid: str,
    blob: BlobInfo,
    origin: str | None,
) -> tuple[int, bool]:
    """Index a new instance under its patient, study and series.

    Returns the instance's id and whether it started a new study. The common case (the
    series exists) costs one lookup, one insert and three counter updates. Raises
    ``IntegrityError`` when the SOP Instance UID is already indexed, and
    :class:`~vesalius.errors.SeriesConflict` when the series belongs to another study.
    """
    conn = session.connection()
    study_uid = first_string(data, "StudyInstanceUID") or ""
    series_uid = first_string(data, "SeriesInstanceUID") or ""
    sop_uid = first_string(data, "SOPInstanceUID") or ""
    new_study = new_series = False
    study_date = None
    cursor = _SERIES_LOOKUP_FAST.run(conn, {"uid": series_uid})
    found = cursor.fetchone()
    cursor.close()
    if found is not None:
        series_pk, study_pk, patient_pk, owner_uid = found
        _check_series_owner(data, series_uid, owner_uid, study_uid)
    else:
        study = _STUDY_LOOKUP_FAST.first(conn, {"uid": study_uid})
        if study is not None:
            study_pk, patient_pk = study
        else:
            patient_id = (first_string(data, "PatientID") or "").strip()[:64]
            patient_pk, _ = _get_or_create(
                conn,
                Patient,
                Patient.patient_id,
                patient_id,
                {**_patient_values(data), "num_studies": 0, "num_series": 0, "num_instances": 0},
            )
            study_values = _study_values(data)
            study_date = study_values["study_date"]
            study_pk, new_study = _get_or_create(
                conn,
                Study,
                Study.study_instance_uid,
                study_uid,
                {**study_values, "patient_pk": patient_pk, "num_series": 0, "num_instances": 0},
            )
            if not new_study:  # created meanwhile, perhaps under another patient
                patient_pk = conn.execute(_STUDY_LOOKUP, {"uid": study_uid}).one()[1]
        series_pk, new_series = _get_or_create(
            conn,
            Series,
            Series.series_instance_uid,
            series_uid,
            {**_series_values(data), "study_pk": study_pk, "num_instances": 0},
        )
        if not new_series:  # created meanwhile, perhaps under another study
            series_pk, study_pk, patient_pk, owner_uid = conn.execute(
                _SERIES_LOOKUP, {"uid": series_uid}
            ).one()
            _check_series_owner(data, series_uid, owner_uid, study_uid)

    instance_id = insert_row(
        conn,
        Instance.__table__,
        {
            "sop_instance_uid": sop_uid,
            "series_pk": series_pk,
            "transfer_syntax_uid": transfer_syntax_uid,
            "blob_key": blob.key,
            "size": blob.size,
            "digest": blob.digest,
            "origin": (origin or "")[:255] or None,
            **_instance_values(data),
        },
    )
    _run(_COUNT_SERIES, conn, {"b_pk": series_pk})
    _run(_COUNT_STUDY[new_series], conn, {"b_pk": study_pk, "b_now": changes.utcnow()})
    _run(_COUNT_PATIENT[new_series, new_study], conn, {"b_pk": patient_pk})
    if new_series:
        _refresh_modalities(conn, study_pk)
    if new_study and study_date:
        _bump_last_study_date(conn, patient_pk, study_date)
    patient_id = (first_string(data, "PatientID") or "").strip()
    feed = [NewChange(ChangeKind.INSTANCE_STORED, patient_id, study_uid, series_uid, sop_uid)]
    if new_study:
        feed.insert(0, NewChange(ChangeKind.STUDY_CREATED, patient_id, study_uid))
    changes.record(session, feed)  # last: the counter's lock is held only until the commit
    return instance_id, new_study


def _check_series_owner(data: DicomJson, series_uid: str, owner_uid: str, study_uid: str) -> None:
    """Refuse an instance of a series already archived under another study.

    Indexing it under the series' study would serve it under UIDs it does not carry (and its
    own study UID would find nothing), so it is refused instead, as the sender's error.
    """
    if owner_uid == study_uid:
        return
    raise SeriesConflict(
        f"its series is archived under study {owner_uid}, not under {study_uid} as the "
        f"instance says (series {series_uid})",
        (
            first_string(data, "SOPClassUID") or "",
            first_string(data, "SOPInstanceUID") or "",
            study_uid,
            series_uid,
        ),
    )


# The statements of a new study and of a new series.
_BUMP_LAST_STUDY_DATE = Prepared(
    update(Patient)
    .where(
        Patient.id == bindparam("b_pk"),
        (Patient.last_study_date.is_(None)) | (Patient.last_study_date < bindparam("b_date")),
    )
    .values(last_study_date=bindparam("b_date"))
)
_STUDY_MODALITIES = Prepared(
    select(Series.modality).where(Series.study_pk == bindparam("b_pk")).distinct()
)
_SET_MODALITIES = Prepared(
    update(Study)
    .where(Study.id == bindparam("b_pk"))
    .values(modalities_in_study=bindparam("b_modalities"))
)


def _bump_last_study_date(conn: Connection, patient_pk: int, study_date: str) -> None:
    _run(_BUMP_LAST_STUDY_DATE, conn, {"b_pk": patient_pk, "b_date": study_date})


def _refresh_modalities(conn: Connection, study_pk: int) -> None:
    cursor = _STUDY_MODALITIES.run(conn, {"b_pk": study_pk})
    modalities = sorted({m for (m,) in cursor.fetchall() if m})
    cursor.close()
    joined = "\\".join(modalities)[:64] or None
    _run(_SET_MODALITIES, conn, {"b_pk": study_pk, "b_modalities": joined})


def replace_instance(
    session: Session,
    record: InstanceRecord,
    data: DicomJson,
    transfer_syntax_uid: str,
    blob: BlobInfo,
    origin: str | None,
) -> None:
    """Point an indexed instance at a new file and metadata (the ``replace`` policy)."""
    session.execute(
        update(Instance)
        .where(Instance.id == record.id)
        .values(
            transfer_syntax_uid=transfer_syntax_uid,
            blob_key=blob.key,
            size=blob.size,
            digest=blob.digest,
            origin=(origin or "")[:255] or None,
            **_instance_values(data),
        )
    )
    changes.record(
        session,
        [
            NewChange(
                ChangeKind.INSTANCE_REPLACED,
                (first_string(data, "PatientID") or "").strip(),
                record.study_instance_uid,
                record.series_instance_uid,
                record.sop_instance_uid,
            )
        ],
    )


# ---------------------------------------------------------------------------------------------
# Queries


@functools.cache
def _find_base(level: Level) -> Select[Any]:
    """SELECT of what :func:`find` reads at *level*, in archive order, joined up to the
    patient so any upper constraint can apply. Built once per level: statements are immutable
    (``where`` returns a new one), and building the joins and comparisons was a seventh of a
    C-FIND's CPU."""
    columns: list[Any] = [
        Patient.attributes,
        Patient.num_studies,
        Patient.num_series,
        Patient.num_instances,
    ]
    if level.depth >= 1:
        columns += [
            Study.attributes,
            Study.num_series,
            Study.num_instances,
            Study.modalities_in_study,
            Study.study_instance_uid,
            Study.id,
        ]
    if level.depth >= 2:
        columns += [Series.attributes, Series.num_instances, Series.series_instance_uid]
    if level.depth >= 3:
        columns += [Instance.metadata_json]
    columns.append(LEVEL_MODEL[level].id)
    query = select(*columns).select_from(LEVEL_MODEL[level])
    chain = [Level.IMAGE, Level.SERIES, Level.STUDY, Level.PATIENT]
    parent_join = {
        Level.IMAGE: (Series, Instance.series_pk == Series.id),
        Level.SERIES: (Study, Series.study_pk == Study.id),
        Level.STUDY: (Patient, Study.patient_pk == Patient.id),
    }
    for lvl in chain[chain.index(level) : -1]:
        model, on = parent_join[lvl]
        query = query.join(model, on)
    return query.order_by(LEVEL_MODEL[level].id).execution_options(**BY_POSITION)


@dataclass
class Match:
    """One matching entity with the JSON of its own level and of the levels above."""

    level: Level
    patient: DicomJson
    study: DicomJson | None
    series: DicomJson | None
    instance: DicomJson | None
    counts: dict[str, Any]
    pk: int = 0  # the row id of the entity at *level*


def _loads(text: str | None) -> DicomJson:
    return dicomjson.loads(text) if text else {}


def find(
    session: Session,
    level: Level,
    constraints: Iterable[Constraint],
    *,
    fold_pn: bool,
    limit: int | None = None,
    offset: int = 0,
) -> list[Match]:
    """Entities at *level* satisfying every (indexed) constraint, in archive order."""
    plans = [condition_plan(c, fold_pn=fold_pn) for c in constraints if is_indexed(c.keyword)]
    values = [value for _, plan_values in plans for value in plan_values]
    if limit is not None:
        values.append(limit)
    if offset:
        values.append(offset)
    shape = (level, tuple(plan_shape for plan_shape, _ in plans), limit is not None, bool(offset))
    statement = _find_statement(shape)
    matches = []
    patients: dict[str, DicomJson] = {}  # a patient's JSON is read once, not once per study
    with _reading(session) as conn:
        rows = statement.all(conn, {f"p{i}": v for i, v in enumerate(values)})
    for row in rows:
        counts: dict[str, Any] = {
            "NumberOfPatientRelatedStudies": row[1],
            "NumberOfPatientRelatedSeries": row[2],
            "NumberOfPatientRelatedInstances": row[3],
        }
        study = series = instance = None
        if level.depth >= 1:
            study = _loads(row[4])
            counts["NumberOfStudyRelatedSeries"] = row[5]
            counts["NumberOfStudyRelatedInstances"] = row[6]
            counts["ModalitiesInStudy"] = row[7].split("\\") if row[7] else []
            counts["_study_pk"] = row[9]
        if level.depth >= 2:
            series = _loads(row[10])
            counts["NumberOfSeriesRelatedInstances"] = row[11]
        if level.depth >= 3:
            instance = _loads(row[13])
        patient = patients.get(row[0] or "")
        if patient is None:
            patient = patients[row[0] or ""] = _loads(row[0])
        matches.append(Match(level, patient, study, series, instance, counts, row[-1]))
    return matches


@contextmanager
def _reading(session: Session) -> Iterator[Connection]:
    """The connection to run one SELECT on for *session*.

    A session that began (it wrote, or read before) answers on its own connection: its
    transaction sees its own writes and keeps one snapshot. A fresh read session lends a
    pooled connection outside any transaction instead; one SELECT is a consistent snapshot on
    its own, and beginning and ending the session's transaction took twice the Python time of
    the query it served.
    """
    bind = session.get_bind()
    if session.in_transaction() or not isinstance(bind, Engine):
        yield session.connection()
        return
    with bind.connect() as conn:
        yield conn


@functools.lru_cache(maxsize=512)  # shapes, not values: a handful in practice
def _find_statement(shape: tuple[Any, ...]) -> Prepared:
    """:func:`find`'s statement for one shape of query, its values bound as p0, p1...

    Building the statement (the conditions, SQLAlchemy's cache key) and executing it through
    SQLAlchemy cost ten times what SQLite takes to run it; a C-FIND paid that on every call.
    """
    level, conditions, has_limit, has_offset = shape
    binds = (bindparam(f"p{i}") for i in itertools.count())
    query = _find_base(level)
    for condition_shape in conditions:
        query = query.where(condition_sql(condition_shape, binds))
    if has_limit:
        query = query.limit(next(binds))
    if has_offset:
        query = query.offset(next(binds))
    return Prepared(query)


def _where_indexed(
    query: Select[Any], constraints: Iterable[Constraint], *, fold_pn: bool
) -> Select[Any]:
    """*query* narrowed by every constraint the index can answer in SQL (the others are the
    caller's: see ``archive.query``). Shared by find and retrieve, so both select alike."""
    for constraint in constraints:
        if is_indexed(constraint.keyword):
            query = query.where(condition(constraint, fold_pn=fold_pn))
    return query


def sop_classes_in_studies(session: Session, study_pks: Sequence[int]) -> dict[int, list[str]]:
    """SOPClassesInStudy for several studies at once."""
    out: dict[int, list[str]] = {pk: [] for pk in study_pks}
    if not study_pks:
        return out
    rows = session.execute(
        select(Series.study_pk, Instance.sop_class_uid)
        .join(Series, Instance.series_pk == Series.id)
        .where(Series.study_pk.in_(study_pks))
        .distinct()
    )
    for study_pk, sop_class in rows:
        out[study_pk].append(sop_class)
    return out


def instances_matching(
    session: Session, level: Level, constraints: Iterable[Constraint], *, fold_pn: bool
) -> list[InstanceRecord]:
    """Every instance at or under the entities at *level* that match every constraint, all of
    which must be indexed (``archive.query.select_instances`` sees to it)."""
    query = _record_query().join(Patient, Study.patient_pk == Patient.id)
    query = _where_indexed(query, constraints, fold_pn=fold_pn)
    query = query.order_by(Study.id, Series.id, Instance.id)
    return [InstanceRecord(*row) for row in session.connection().execute(query)]


def instances_under(session: Session, level: Level, pks: Sequence[int]) -> list[InstanceRecord]:
    """Every instance of the entities at *level* with these row ids (from :func:`find`)."""
    column = {
        Level.PATIENT: Study.patient_pk,
        Level.STUDY: Study.id,
        Level.SERIES: Series.id,
        Level.IMAGE: Instance.id,
    }[level]
    records: list[InstanceRecord] = []
    for chunk in _chunks(sorted(set(pks)), 500):
        query = _record_query().where(column.in_(chunk))
        records += [InstanceRecord(*row) for row in session.execute(query)]
    records.sort(key=lambda r: r.id)
    return records


def within(
    query: Select[Any], study_uid: str, series_uid: str | None, sop_uid: str | None
) -> Select[Any]:
    """Narrow an instance query (joined to its series and study) to a study, series or
    instance, in archive order."""
    query = query.where(Study.study_instance_uid == study_uid)
    if series_uid is not None:
        query = query.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        query = query.where(Instance.sop_instance_uid == sop_uid)
    return query.order_by(Series.id, Instance.id)


# ---------------------------------------------------------------------------------------------
# Deletion and bookkeeping


def delete_instances(session: Session, instance_ids: Sequence[int]) -> None:
    """Remove instances, update the counters, and remove parents left empty."""
    if not instance_ids:
        return
    rows = session.execute(
        select(
            Instance.id,
            Series.id,
            Study.id,
            Patient.id,
            Patient.patient_id,
            Study.study_instance_uid,
            Series.series_instance_uid,
            Instance.sop_instance_uid,
        )
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(Instance.id.in_(instance_ids))
        .order_by(Instance.id)
    ).all()
    for chunk in _chunks([r[0] for r in rows], 500):
        session.execute(delete(Instance).where(Instance.id.in_(chunk)))
    series_ids = {r[1] for r in rows}
    study_ids = {r[2] for r in rows}
    patient_ids = {r[3] for r in rows}
    for series_id in series_ids:
        remaining = session.execute(
            select(func.count()).select_from(Instance).where(Instance.series_pk == series_id)
        ).scalar_one()
        if remaining:
            session.execute(
                update(Series).where(Series.id == series_id).values(num_instances=remaining)
            )
        else:
            session.execute(delete(Series).where(Series.id == series_id))
    gone_studies = {study_id for study_id in study_ids if not _recount_study(session, study_id)}
    gone_patients = {pk for pk in patient_ids if not _recount_patient(session, pk)}
    feed = [NewChange(ChangeKind.INSTANCE_DELETED, r[4], r[5], r[6], r[7]) for r in rows]
    for study_pk, patient_id, study_uid in dict.fromkeys((r[2], r[4], r[5]) for r in rows):
        if study_pk in gone_studies:
            feed.append(NewChange(ChangeKind.STUDY_DELETED, patient_id, study_uid))
    for patient_pk, patient_id in dict.fromkeys((r[3], r[4]) for r in rows):
        if patient_pk in gone_patients:
            feed.append(NewChange(ChangeKind.PATIENT_DELETED, patient_id))
    changes.record(session, feed)


def _recount_study(session: Session, study_id: int) -> bool:
    """Bring a study's counters up to date; False when it was left empty and removed."""
    series_count, instance_count = session.execute(
        select(func.count(Series.id), func.coalesce(func.sum(Series.num_instances), 0)).where(
            Series.study_pk == study_id
        )
    ).one()
    if not series_count:
        session.execute(delete(Study).where(Study.id == study_id))
        return False
    session.execute(
        update(Study)
        .where(Study.id == study_id)
        .values(num_series=series_count, num_instances=instance_count)
    )
    _refresh_modalities(session.connection(), study_id)
    return True


def _recount_patient(session: Session, patient_id: int) -> bool:
    """Bring a patient's counters up to date; False when it was left empty and removed."""
    studies, series, instances, last = session.execute(
        select(
            func.count(Study.id),
            func.coalesce(func.sum(Study.num_series), 0),
            func.coalesce(func.sum(Study.num_instances), 0),
            func.max(Study.study_date),
        ).where(Study.patient_pk == patient_id)
    ).one()
    if not studies:
        session.execute(delete(Patient).where(Patient.id == patient_id))
        return False
    session.execute(
        update(Patient)
        .where(Patient.id == patient_id)
        .values(
            num_studies=studies, num_series=series, num_instances=instances, last_study_date=last
        )
    )
    return True


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def clear(session: Session) -> None:
    """Remove every imaging row (before a rebuild from the stored files).

    The change feed keeps its history and numbers; an ``index_reset`` change tells its readers
    to forget what they knew: the ``instance_stored`` changes of the rebuild follow.
    """
    for model in (Instance, Series, Study, Patient):
        session.execute(delete(model))
    changes.record(session, [NewChange(ChangeKind.INDEX_RESET)])


@dataclass(frozen=True)
class SettledStudy:
    study_instance_uid: str
    patient_id: str
    num_instances: int


def settle_studies(session: Session, idle_since: Any, limit: int = 500) -> list[SettledStudy]:
    """Declare stable the studies without a new instance since *idle_since*; writes a
    ``study_stable`` change for each, in this transaction."""
    return _settle(
        session,
        _UNSTABLE.where(Study.updated_at < idle_since).order_by(Study.updated_at).limit(limit),
    )


_UNSTABLE = (
    select(Study.id, Study.study_instance_uid, Patient.patient_id, Study.num_instances)
    .join(Patient, Study.patient_pk == Patient.id)
    .where(Study.stable_at.is_(None))
)


def _settle(session: Session, query: Select[Any]) -> list[SettledStudy]:
    """Mark stable the unstable studies *query* selects, with a ``study_stable`` change each."""
    rows = session.execute(query.with_for_update(skip_locked=True)).all()
    if not rows:
        return []
    now = changes.utcnow()
    session.execute(update(Study).where(Study.id.in_([r[0] for r in rows])).values(stable_at=now))
    changes.record(session, [NewChange(ChangeKind.STUDY_STABLE, r[2], r[1]) for r in rows])
    return [SettledStudy(r[1], r[2], int(r[3])) for r in rows]


def first_instance_json(session: Session, study_uid: str) -> DicomJson | None:
    """The DICOM JSON of a study's first instance (for matching study-level rules)."""
    text = session.execute(
        select(Instance.metadata_json)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .where(Study.study_instance_uid == study_uid)
        .order_by(Instance.id)
        .limit(1)
    ).scalar()
    return dicomjson.loads(text) if text else None


def mark_all_stable(session: Session) -> None:
    """Declare every study complete (after a rebuild: the files were archived long ago)."""
    now = changes.utcnow()
    session.execute(update(Study).where(Study.stable_at.is_(None)).values(stable_at=now))


@dataclass(frozen=True)
class Totals:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


def totals(session: Session) -> Totals:
    def count(model: Any) -> int:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())

    size = session.execute(select(func.coalesce(func.sum(Instance.size), 0))).scalar_one()
    return Totals(count(Patient), count(Study), count(Series), count(Instance), int(size))


@dataclass(frozen=True)
class IndexedFile:
    """An instance row's file, as the row describes it."""

    id: int
    sop_instance_uid: str
    blob_key: str
    size: int


def instances_since(session: Session, since: datetime) -> list[IndexedFile]:
    """The instances indexed at or after *since* (naive UTC), newest first.

    Read backwards along the primary key and stopped at the first older row, so a large
    index costs no more than the rows asked for (``created_at`` has no index of its own).
    """
    found: list[IndexedFile] = []
    rows = session.execute(
        select(
            Instance.id, Instance.created_at, Instance.sop_instance_uid, Instance.blob_key,
            Instance.size,
        )
        .order_by(Instance.id.desc())
        .execution_options(yield_per=500)
    )  # fmt: skip
    for row_id, created, sop_uid, key, size in rows:
        if created is not None and created < since:
            break
        found.append(IndexedFile(row_id, sop_uid, key, size))
    rows.close()
    return found


def all_blob_keys(session: Session) -> set[str]:
    return set(session.execute(select(Instance.blob_key)).scalars())


def snapshot(session: Session) -> list[tuple[Any, ...]]:
    """A comparable picture of the whole index (used to check a rebuild)."""
    rows = session.execute(
        select(
            Patient.patient_id,
            Patient.num_studies,
            Patient.num_series,
            Patient.num_instances,
            Study.study_instance_uid,
            Study.num_series,
            Study.num_instances,
            Study.modalities_in_study,
            Series.series_instance_uid,
            Series.num_instances,
            Instance.sop_instance_uid,
            Instance.digest,
            Instance.metadata_json,
        )
        .join(Study, Study.patient_pk == Patient.id)
        .join(Series, Series.study_pk == Study.id)
        .join(Instance, Instance.series_pk == Series.id)
        .order_by(Instance.sop_instance_uid)
    )
    return [tuple(r) for r in rows]


def instances_by_uid(session: Session, uids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (SOP Class UID, Study Instance UID) of the indexed ones among *uids*."""
    found: dict[str, tuple[str, str]] = {}
    unique = list(dict.fromkeys(u for u in uids if u))
    for start in range(0, len(unique), 500):
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.sop_class_uid, Study.study_instance_uid)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .where(Instance.sop_instance_uid.in_(unique[start : start + 500]))
        )
        for sop_uid, sop_class, study_uid in rows:
            found[sop_uid] = (sop_class, study_uid)
    return found


def settle_named_studies(session: Session, study_uids: Sequence[str]) -> list[SettledStudy]:
    """Declare stable now the named studies that are not stable yet (a ``study_stable``
    change for each, in this transaction): the study said it is complete."""
    if not study_uids:
        return []
    return _settle(session, _UNSTABLE.where(Study.study_instance_uid.in_(list(study_uids))))


_IMAGES_IN_ACQUISITION = "00201002"


def _announced(session: Session, series_pks: Sequence[int]) -> dict[int, int]:
    """Series pk -> the Images in Acquisition (0020,1002) its first instance announces."""
    if not series_pks:
        return {}
    first = (
        select(func.min(Instance.id))
        .where(Instance.series_pk.in_(list(series_pks)))
        .group_by(Instance.series_pk)
    )
    announced: dict[int, int] = {}
    for pk, text in session.execute(
        select(Instance.series_pk, Instance.metadata_json).where(Instance.id.in_(first))
    ):
        if not text or f'"{_IMAGES_IN_ACQUISITION}"' not in text:
            continue
        values = dicomjson.loads(text).get(_IMAGES_IN_ACQUISITION, {}).get("Value") or []
        try:
            count = int(values[0])
        except (IndexError, TypeError, ValueError):
            continue
        if count > 0:
            announced[pk] = count
    return announced


def announced_complete(session: Session, limit: int = 200) -> list[str]:
    """Studies not stable yet whose every series announces how many images it has (Images in
    Acquisition, taken per series: one acquisition per series, the common case) and holds
    at least that many: they said they are complete."""
    studies = dict(
        session.execute(
            select(Study.id, Study.study_instance_uid)
            .where(Study.stable_at.is_(None))
            .order_by(Study.updated_at.desc())
            .limit(limit)
        ).all()
    )
    if not studies:
        return []
    series = session.execute(
        select(Series.id, Series.study_pk, Series.num_instances).where(
            Series.study_pk.in_(list(studies))
        )
    ).all()
    announced = _announced(session, [s[0] for s in series])
    complete = set(studies)
    for pk, study_pk, count in series:
        wanted = announced.get(pk)
        if wanted is None or count < wanted:
            complete.discard(study_pk)
    return sorted(studies[pk] for pk in complete)


@dataclass(frozen=True)
class SeriesCompleteness:
    series_instance_uid: str
    num_instances: int
    announced_instances: int | None


@dataclass(frozen=True)
class StudyCompleteness:
    study_instance_uid: str
    num_instances: int
    stable: bool
    stable_at: Any
    last_instance_at: Any
    series: list[SeriesCompleteness]


def study_completeness(session: Session, study_uid: str) -> StudyCompleteness | None:
    """Whether a study is stable (complete), and what its series announce; None: no study."""
    study = session.execute(
        select(Study.id, Study.num_instances, Study.stable_at, Study.updated_at).where(
            Study.study_instance_uid == study_uid
        )
    ).first()
    if study is None:
        return None
    series = session.execute(
        select(Series.id, Series.series_instance_uid, Series.num_instances)
        .where(Series.study_pk == study[0])
        .order_by(Series.id)
    ).all()
    announced = _announced(session, [s[0] for s in series])
    return StudyCompleteness(
        study_uid,
        int(study[1]),
        study[2] is not None,
        study[2],
        study[3],
        [SeriesCompleteness(s[1], int(s[2]), announced.get(s[0])) for s in series],
    )
