"""Index questions of the portal: the patient worklist and a patient's studies and series.

The worklist answers from the patient rows alone (folded name, study count and last study
date are kept there by the imaging index), so a page of 50 is one indexed, limited query even
with 100,000 patients. Name search matches every word anywhere in the folded name; an ID
matches by its start. The total is counted up to :data:`COUNT_CAP` only: past that the portal
shows "1000+" rather than paying for a full count on every keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sqlalchemy import and_, exists, func, literal, literal_column, or_, select, union_all
from sqlalchemy.orm import Session

from vesalius.dicom.matching import fold_text
from vesalius.index.mirror_models import MirrorState, RemotePatient, RemoteSeries, RemoteStudy
from vesalius.index.models import Patient, Series, Study

_LocalSeries = Series

LOCAL = "local"

COUNT_CAP = 1000
PAGE_SIZE = 50

Sort = Literal["last_study_date", "name"]


@dataclass(frozen=True)
class WorklistFilters:
    text: str | None = None
    modality: str | None = None
    date_from: str | None = None  # YYYYMMDD, inclusive
    date_to: str | None = None
    sort: Sort = "last_study_date"
    page: int = 1
    per_page: int = PAGE_SIZE
    source: str | None = None  # "local", a remote PACS's name, or None for all


@dataclass(frozen=True)
class WorklistRow:
    patient_id: str
    name: str | None
    birth_date: str | None
    sex: str | None
    num_studies: int
    last_study_date: str | None
    last_study_description: str | None = None
    last_study_modalities: str | None = None
    source: str = LOCAL  # "local", or the remote PACS that lists this patient


@dataclass(frozen=True)
class WorklistPage:
    rows: list[WorklistRow]
    total: int
    total_is_exact: bool
    page: int
    per_page: int


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class _Tables:
    """The local patients and studies, or a remote PACS's mirrored ones (same columns)."""

    patient: Any
    study: Any
    remote: bool = False
    source: str | None = None  # one remote PACS's name, or all of them

    def where(self) -> list[Any]:
        return [self.patient.source == self.source] if self.remote and self.source else []


_LOCAL = _Tables(Patient, Study)


def _conditions(
    filters: WorklistFilters, *, for_rows: bool = True, tables: _Tables = _LOCAL
) -> list[Any]:
    Patient, Study = tables.patient, tables.study
    conditions: list[Any] = list(tables.where())
    text = (filters.text or "").strip()
    if text:
        words = fold_text(text).replace("^", " ").replace(",", " ").split()
        name = and_(
            *[Patient.patient_name_folded.like(f"%{_like(w)}%", escape="\\") for w in words]
        )
        by_id = Patient.patient_id.like(f"{_like(text)}%", escape="\\")
        # Two narrow scans (the folded-name index alone; the ID index by prefix), then the
        # rows: much faster than testing each row in sort order when matches are rare.
        # (Counting stops after COUNT_CAP matches, so it tests rows directly.)
        if for_rows:
            matching = union_all(select(Patient.id).where(name), select(Patient.id).where(by_id))
            conditions.append(Patient.id.in_(matching.scalar_subquery()))
        else:
            conditions.append(or_(name, by_id))
    if filters.modality or filters.date_from or filters.date_to:
        studies = select(Study.id).where(Study.patient_pk == Patient.id)
        if filters.modality:
            studies = studies.where(
                Study.modalities_in_study.like(f"%{_like(filters.modality.upper())}%", escape="\\")
            )
        if filters.date_from:
            studies = studies.where(Study.study_date >= filters.date_from)
        if filters.date_to:
            studies = studies.where(Study.study_date <= filters.date_to)
        conditions.append(exists(studies))
    return conditions


def search_patients(session: Session, filters: WorklistFilters) -> WorklistPage:
    """A page of the worklist: the archive's patients and, unless *filters.source* says
    otherwise, each remote PACS's mirrored patients (one row per patient and source)."""
    if filters.source == LOCAL:
        return _search(session, filters, _LOCAL)
    if filters.source:
        return _search(session, filters, _Tables(RemotePatient, RemoteStudy, True, filters.source))
    if session.execute(select(RemotePatient.id).limit(1)).first() is None:
        return _search(session, filters, _LOCAL)
    # Both: the first pages of each, merged in the sort order (deep pages cost more).
    page = max(1, filters.page)
    wide = replace(filters, page=1, per_page=page * filters.per_page)
    local = _search(session, wide, _LOCAL)
    remote = _search(session, wide, _Tables(RemotePatient, RemoteStudy, True))
    if filters.sort == "name":

        def key(row: WorklistRow) -> Any:
            return (row.name is None, fold_text(row.name or ""), row.patient_id, row.source)

    else:

        def key(row: WorklistRow) -> Any:
            date = row.last_study_date or ""
            return (date == "", [-ord(c) for c in date], row.patient_id, row.source)

    rows = sorted(local.rows + remote.rows, key=key)
    start = (page - 1) * filters.per_page
    total = local.total + remote.total
    exact = local.total_is_exact and remote.total_is_exact
    return WorklistPage(
        rows[start : start + filters.per_page],
        min(total, COUNT_CAP),
        exact and total <= COUNT_CAP,
        page,
        filters.per_page,
    )


def _search(session: Session, filters: WorklistFilters, tables: _Tables) -> WorklistPage:
    Patient = tables.patient
    known_total: int | None = None
    if (filters.text or "").strip():
        # One capped pass over the matches decides the plan. Few matches (the usual case when
        # a name is typed) are then read by id and sorted; many matches are read in the sort
        # index's order, where the first pages are found after a short walk. Either way the
        # table is scanned at most once, and the pass also gives the (capped) total.
        found = _conditions(filters, for_rows=False, tables=tables)
        ids = list(session.execute(select(Patient.id).where(*found).limit(COUNT_CAP + 1)).scalars())
        known_total = len(ids)
        few = known_total <= COUNT_CAP
        conditions = [Patient.id.in_(ids)] if few else found
        unindexed = few
    else:
        conditions = _conditions(filters, tables=tables)
        unindexed = False
    source = Patient.source if tables.remote else literal(LOCAL)
    query = select(
        Patient.id,
        source,
        Patient.patient_id,
        Patient.patient_name,
        Patient.patient_birth_date,
        Patient.patient_sex,
        Patient.num_studies,
        Patient.last_study_date,
    ).where(*conditions)
    dialect = session.get_bind().dialect.name
    # "+column" keeps SQLite from walking the sort column's index over a few known ids.
    unindexed = unindexed and dialect == "sqlite"
    table = Patient.__tablename__
    if filters.sort == "name":
        by_name: Any = (
            literal_column(f"+{table}.patient_name_folded")
            if unindexed
            else Patient.patient_name_folded
        )
        query = query.order_by(by_name, Patient.id)
    else:
        date: Any = (
            literal_column(f"+{table}.last_study_date") if unindexed else Patient.last_study_date
        )
        newest = date.desc()
        if dialect == "postgresql":
            newest = newest.nulls_last()  # elsewhere NULL already sorts last when descending
        query = query.order_by(newest, Patient.id.desc())
    page = max(1, filters.page)
    query = query.limit(filters.per_page).offset((page - 1) * filters.per_page)
    found_rows = list(session.execute(query))
    last = _last_studies(session, [row[0] for row in found_rows], tables.study)
    rows = [
        WorklistRow(*row[2:], *last.get(row[0], (None, None)), source=row[1]) for row in found_rows
    ]
    offset = (page - 1) * filters.per_page
    if known_total is not None:
        total, exact = min(known_total, COUNT_CAP), known_total <= COUNT_CAP
    elif len(rows) < filters.per_page and (rows or page == 1):
        total, exact = offset + len(rows), True
    else:
        counted = _conditions(filters, for_rows=False, tables=tables)
        capped = select(Patient.id).where(*counted).limit(COUNT_CAP + 1).subquery()
        total = session.execute(select(func.count()).select_from(capped)).scalar_one()
        exact = total <= COUNT_CAP
        total = min(total, COUNT_CAP)
    return WorklistPage(rows, total, exact, page, filters.per_page)


def _last_studies(
    session: Session, patient_pks: list[int], Study: Any = Study
) -> dict[int, tuple[Any, Any]]:
    """Description and modalities of each patient's newest study: one query for the page."""
    if not patient_pks:
        return {}
    newest = (
        func.row_number()
        .over(
            partition_by=Study.patient_pk,
            order_by=(
                Study.study_date.is_(None),  # a study without a date is not the newest
                Study.study_date.desc(),
                Study.study_time.desc(),
                Study.id.desc(),
            ),
        )
        .label("n")
    )
    ranked = (
        select(
            Study.patient_pk,
            Study.study_description,
            Study.modalities_in_study,
            newest,
        )
        .where(Study.patient_pk.in_(patient_pks))
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.patient_pk, ranked.c.study_description, ranked.c.modalities_in_study).where(
            ranked.c.n == 1
        )
    )
    return {pk: (description, modalities) for pk, description, modalities in rows}


@dataclass
class SeriesRow:
    series_instance_uid: str
    modality: str | None
    series_number: str | None
    description: str | None
    num_instances: int


@dataclass
class StudyRow:
    study_instance_uid: str
    study_date: str | None
    description: str | None
    accession_number: str | None
    modalities: str | None
    num_series: int
    num_instances: int
    series: list[SeriesRow] = field(default_factory=list)
    source: str = LOCAL  # "local" (held here), or the remote PACS that holds it


@dataclass
class PatientStudies:
    patient_id: str
    name: str | None
    birth_date: str | None
    sex: str | None
    studies: list[StudyRow]


def patient_studies(session: Session, patient_id: str) -> PatientStudies | None:
    """A patient with its studies (newest first) and their series, or ``None``.

    Studies that only a remote PACS holds (the mirror) are listed too, with their source.
    """
    patient = session.execute(
        select(
            Patient.id,
            Patient.patient_name,
            Patient.patient_birth_date,
            Patient.patient_sex,
        ).where(Patient.patient_id == patient_id)
    ).first()
    remote_patients = session.execute(
        select(
            RemotePatient.id,
            RemotePatient.patient_name,
            RemotePatient.patient_birth_date,
            RemotePatient.patient_sex,
        )
        # the sources named first, so that the (source, patient_id) unique index finds them
        .where(RemotePatient.source.in_(select(MirrorState.source)))
        .where(RemotePatient.patient_id == patient_id)
        .order_by(RemotePatient.id)
    ).all()
    if patient is None and not remote_patients:
        return None
    found: list[StudyRow] = []
    if patient is not None:
        found += _studies_of(session, [patient.id], _LOCAL)
    if remote_patients:
        tables = _Tables(RemotePatient, RemoteStudy, True)
        found += _studies_of(session, [row.id for row in remote_patients], tables)
    found.sort(key=lambda row: row.study_date or "", reverse=True)
    about = patient if patient is not None else remote_patients[0]
    return PatientStudies(patient_id, about[1], about[2], about[3], found)


def _studies_of(session: Session, patient_pks: list[int], tables: _Tables) -> list[StudyRow]:
    Study, Series = tables.study, (RemoteSeries if tables.remote else _LocalSeries)
    source = Study.source if tables.remote else literal(LOCAL)
    studies: dict[int, StudyRow] = {}
    for row in session.execute(
        select(
            Study.id,
            Study.study_instance_uid,
            Study.study_date,
            Study.study_description,
            Study.accession_number,
            Study.modalities_in_study,
            Study.num_series,
            Study.num_instances,
            source,
        )
        .where(Study.patient_pk.in_(patient_pks))
        .order_by(Study.study_date.desc(), Study.id.desc())
    ):
        studies[row[0]] = StudyRow(*row[1:-1], source=row[-1])
    if studies:
        for row in session.execute(
            select(
                Series.study_pk,
                Series.series_instance_uid,
                Series.modality,
                Series.series_number,
                Series.series_description,
                Series.num_instances,
            )
            .where(Series.study_pk.in_(list(studies)))
            .order_by(Series.id)
        ):
            studies[row[0]].series.append(SeriesRow(*row[1:]))
    return list(studies.values())


def patient_of_study(session: Session, study_uid: str) -> str | None:
    """The Patient ID of the study with this UID, or ``None`` when there is no such study."""
    row = session.execute(
        select(Patient.patient_id)
        .join(Study, Study.patient_pk == Patient.id)
        .where(Study.study_instance_uid == study_uid)
    ).first()
    return None if row is None else str(row[0])


def patient_of_remote_study(session: Session, study_uid: str) -> str | None:
    """The Patient ID of a study only a remote PACS holds (the mirror), or ``None``."""
    row = session.execute(
        select(RemotePatient.patient_id)
        .join(RemoteStudy, RemoteStudy.patient_pk == RemotePatient.id)
        .where(RemoteStudy.study_instance_uid == study_uid)
        .limit(1)
    ).first()
    return None if row is None else str(row[0])
