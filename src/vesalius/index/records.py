"""The SQL of the research records: subjects, the ordered timeline and what hangs off events.

Functions take the caller's session and never commit: the records service decides what one
transaction holds. Timeline changes lock the subject's row first (``SELECT ... FOR UPDATE`` on
PostgreSQL and MariaDB; SQLite has one writer anyway), so two writers cannot hand out the same
position.

The order of a timeline is ``(event_date, position, id)``. Positions count from 0 within a date
and stay contiguous: inserting shifts the later events of the date up, removing shifts them
down, moving is a removal and an insertion in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, bindparam, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vesalius.dicom import dicomjson
from vesalius.index.models import Patient, Study
from vesalius.index.prepared import Prepared, insert_row
from vesalius.index.records_models import (
    AuxFile,
    BaselineDiagnosis,
    ClinicalNote,
    Event,
    HeartModel,
    HeartModelField,
    StudyLink,
    Subject,
)

# -- subjects -----------------------------------------------------------------------------------


def get_subject(session: Session, subject_id: str, *, lock: bool = False) -> Subject | None:
    query = select(Subject).where(Subject.subject_id == subject_id)
    if lock:
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


# The statements every new study runs (the imaging session hook), on the driver's cursor.
_LOCK_SUBJECT = Prepared(select(Subject.id).where(Subject.id == bindparam("pk")).with_for_update())
_SUBJECT_BY_ID = Prepared(select(Subject.id).where(Subject.subject_id == bindparam("sid")))
_COUNT_ON = Prepared(
    select(func.count())
    .select_from(Event)
    # position -1 marks the event being moved: it does not count
    .where(
        Event.subject_pk == bindparam("pk"),
        Event.event_date == bindparam("day"),
        Event.position >= 0,
    )
)
_SESSION_EVENT = Prepared(select(Event.id).where(Event.session_study_uid == bindparam("uid")))
_LINK = Prepared(
    select(StudyLink.id).where(
        StudyLink.event_pk == bindparam("event"), StudyLink.study_instance_uid == bindparam("uid")
    )
)


def _one(session: Session, statement: Prepared, params: dict[str, Any]) -> Any:
    """The first column of the first row (None when there is none)."""
    session.flush()  # what session.execute would do first: pending ORM changes are seen
    cursor = statement.run(session.connection(), params)
    row = cursor.fetchone()
    cursor.close()
    return None if row is None else row[0]


def lock_subject(session: Session, subject_pk: int) -> None:
    _one(session, _LOCK_SUBJECT, {"pk": subject_pk})


def insert_subject(session: Session, values: dict[str, Any]) -> Subject:
    """Insert a subject; raises ``IntegrityError`` (in a savepoint) when the ID is taken."""
    subject = Subject(**values)
    with session.begin_nested():
        session.add(subject)
        session.flush()
    return subject


def get_or_create_subject(
    session: Session, subject_id: str, defaults: dict[str, Any]
) -> tuple[int, bool]:
    """The id of the subject, creating it; True when it was created."""
    found = _one(session, _SUBJECT_BY_ID, {"sid": subject_id})
    if found is not None:
        return found, False
    try:
        row = {"subject_id": subject_id, **defaults}
        return insert_row(session.connection(), Subject.__table__, row, may_conflict=True), True
    except IntegrityError:
        # Created by another writer between our select and insert.
        return _one(session, _SUBJECT_BY_ID, {"sid": subject_id}), False


def update_subject(session: Session, subject_pk: int, values: dict[str, Any]) -> None:
    if values:
        session.execute(
            update(Subject).where(Subject.id == subject_pk).values(**values, updated_at=func.now())
        )


def subject_blob_keys(session: Session, subject_pk: int) -> list[str]:
    """Every blob the subject's records reference (to remove them after the rows are gone)."""
    events = select(Event.id).where(Event.subject_pk == subject_pk)
    return _blob_keys(session, events)


def delete_subject(session: Session, subject_pk: int) -> None:
    # Children first, by id list: MySQL cannot delete from a table it selects from.
    ids = list(session.execute(select(Event.id).where(Event.subject_pk == subject_pk)).scalars())
    _delete_event_rows(session, ids)
    session.execute(delete(Subject).where(Subject.id == subject_pk))


@dataclass(frozen=True)
class SubjectFilters:
    q: str | None = None  # substring of the subject ID
    cohort: str | None = None
    sex: str | None = None
    event_kind: str | None = None  # subjects with at least one event of this kind
    study_instance_uid: str | None = None  # subjects linked to this study


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_subjects(
    session: Session, filters: SubjectFilters, offset: int, limit: int
) -> tuple[list[Subject], int]:
    """A page of subjects ordered by subject ID, and how many match in all."""
    query = select(Subject)
    if filters.q:
        query = query.where(Subject.subject_id.like(f"%{_like_escape(filters.q)}%", escape="\\"))
    if filters.cohort is not None:
        query = query.where(Subject.cohort == filters.cohort)
    if filters.sex is not None:
        query = query.where(Subject.sex == filters.sex)
    if filters.event_kind is not None:
        query = query.where(
            exists().where(Event.subject_pk == Subject.id, Event.kind == filters.event_kind)
        )
    if filters.study_instance_uid is not None:
        query = query.where(
            exists()
            .where(Event.subject_pk == Subject.id)
            .where(StudyLink.event_pk == Event.id)
            .where(StudyLink.study_instance_uid == filters.study_instance_uid)
        )
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.order_by(Subject.subject_id).offset(offset).limit(limit)).scalars()
    return list(rows), int(total)


def subject_counts(session: Session, subject_pks: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Per subject: (number of events, number of distinct linked studies)."""
    if not subject_pks:
        return {}
    events = dict(
        session.execute(
            select(Event.subject_pk, func.count(Event.id))
            .where(Event.subject_pk.in_(subject_pks))
            .group_by(Event.subject_pk)
        ).all()
    )
    studies = dict(
        session.execute(
            select(Event.subject_pk, func.count(func.distinct(StudyLink.study_instance_uid)))
            .join(StudyLink, StudyLink.event_pk == Event.id)
            .where(Event.subject_pk.in_(subject_pks))
            .group_by(Event.subject_pk)
        ).all()
    )
    return {pk: (int(events.get(pk, 0)), int(studies.get(pk, 0))) for pk in subject_pks}


# -- the timeline -------------------------------------------------------------------------------


def _order(query: Select[Any]) -> Select[Any]:
    return query.order_by(Event.event_date, Event.position, Event.id)


def ordered_event_ids(session: Session, subject_pk: int) -> list[int]:
    """The subject's events in timeline order."""
    return list(
        session.execute(_order(select(Event.id).where(Event.subject_pk == subject_pk))).scalars()
    )


def get_event(session: Session, subject_pk: int, event_id: int) -> Event | None:
    return session.execute(
        select(Event).where(Event.id == event_id, Event.subject_pk == subject_pk)
    ).scalar_one_or_none()


def _count_on(session: Session, subject_pk: int, day: dt.date) -> int:
    return int(_one(session, _COUNT_ON, {"pk": subject_pk, "day": day}))


def _open_slot(session: Session, subject_pk: int, day: dt.date, position: int | None) -> int:
    """Make room at *position* on *day* (default: last) and return the position to use."""
    count = _count_on(session, subject_pk, day)
    if position is None or position >= count:
        return count
    session.execute(
        update(Event)
        .where(Event.subject_pk == subject_pk, Event.event_date == day, Event.position >= position)
        .values(position=Event.position + 1)
    )
    return position


def _close_slot(session: Session, subject_pk: int, day: dt.date, position: int) -> None:
    session.execute(
        update(Event)
        .where(Event.subject_pk == subject_pk, Event.event_date == day, Event.position > position)
        .values(position=Event.position - 1)
    )


def insert_event(
    session: Session, subject_pk: int, values: dict[str, Any], position: int | None = None
) -> int:
    """Insert an event at *position* among those of its date (default: last); returns its id.

    The caller holds the subject's lock.
    """
    day: dt.date = values["event_date"]
    slot = _open_slot(session, subject_pk, day, position)
    row = {"subject_pk": subject_pk, "position": slot, **values}
    return insert_row(session.connection(), Event.__table__, row)


def move_event(session: Session, event: Event, day: dt.date, position: int | None) -> None:
    """Move an event to *position* on *day* (default: last), keeping positions contiguous."""
    # Read before updating: an ORM update also changes the loaded object's attributes.
    subject_pk, old_day, old_position = event.subject_pk, event.event_date, event.position
    session.execute(update(Event).where(Event.id == event.id).values(position=-1))
    _close_slot(session, subject_pk, old_day, old_position)
    slot = _open_slot(session, subject_pk, day, position)
    session.execute(update(Event).where(Event.id == event.id).values(event_date=day, position=slot))


def update_event(session: Session, event_id: int, values: dict[str, Any]) -> None:
    if values:
        session.execute(update(Event).where(Event.id == event_id).values(**values))


def event_blob_keys(session: Session, event_id: int) -> list[str]:
    return _blob_keys(session, select(Event.id).where(Event.id == event_id))


def delete_event(session: Session, event: Event) -> None:
    subject_pk, day, position = event.subject_pk, event.event_date, event.position
    _delete_event_rows(session, [event.id])
    _close_slot(session, subject_pk, day, position)


def _blob_keys(session: Session, events: Select[Any]) -> list[str]:
    ids = events.scalar_subquery()
    keys = list(
        session.execute(select(AuxFile.blob_key).where(AuxFile.event_pk.in_(ids))).scalars()
    )
    for data_key, xml_key in session.execute(
        select(HeartModel.data_key, HeartModel.xml_key).where(HeartModel.event_pk.in_(ids))
    ):
        keys += [data_key, xml_key]
    return keys


def _delete_event_rows(session: Session, event_ids: list[int]) -> None:
    for ids in _chunks(event_ids, 500):
        session.execute(delete(HeartModelField).where(HeartModelField.event_pk.in_(ids)))
        for model in (HeartModel, AuxFile, ClinicalNote, BaselineDiagnosis):
            session.execute(delete(model).where(model.event_pk.in_(ids)))
        session.execute(delete(StudyLink).where(StudyLink.event_pk.in_(ids)))
        session.execute(delete(Event).where(Event.id.in_(ids)))


# -- what hangs off events ----------------------------------------------------------------------


def put_note(session: Session, event_id: int, values: dict[str, Any]) -> None:
    session.execute(delete(ClinicalNote).where(ClinicalNote.event_pk == event_id))
    session.execute(ClinicalNote.__table__.insert().values(event_pk=event_id, **values))


def put_diagnosis(session: Session, event_id: int, values: dict[str, Any]) -> None:
    values = {**values, "extra": dicomjson.dumps(values.get("extra") or {})}
    session.execute(delete(BaselineDiagnosis).where(BaselineDiagnosis.event_pk == event_id))
    session.execute(BaselineDiagnosis.__table__.insert().values(event_pk=event_id, **values))


def add_file(session: Session, event_id: int, values: dict[str, Any]) -> None:
    session.execute(AuxFile.__table__.insert().values(event_pk=event_id, **values))


def add_heart_model(
    session: Session, event_id: int, values: dict[str, Any], fields: Iterable[tuple[str, str]]
) -> None:
    session.execute(HeartModel.__table__.insert().values(event_pk=event_id, **values))
    rows = [{"event_pk": event_id, "name": n[:128], "value": v[:255]} for n, v in fields]
    if rows:
        session.execute(HeartModelField.__table__.insert(), rows)


def study_exists(session: Session, study_uid: str) -> bool:
    return (
        session.execute(select(Study.id).where(Study.study_instance_uid == study_uid)).first()
        is not None
    )


def add_link(session: Session, event_id: int, study_uid: str) -> bool:
    """Link an event to a study; False when the link already existed."""
    if _one(session, _LINK, {"event": event_id, "uid": study_uid}) is not None:
        return False
    row = {"event_pk": event_id, "study_instance_uid": study_uid}
    insert_row(session.connection(), StudyLink.__table__, row)
    return True


def remove_link(session: Session, event_id: int, study_uid: str) -> bool:
    result = session.execute(
        delete(StudyLink).where(
            StudyLink.event_pk == event_id, StudyLink.study_instance_uid == study_uid
        )
    )
    return bool(result.rowcount)


def session_event_for_study(session: Session, study_uid: str) -> int | None:
    """The imaging session event an arriving study created, if any."""
    found = _one(session, _SESSION_EVENT, {"uid": study_uid})
    return None if found is None else int(found)


def insert_session_event(
    session: Session, subject_pk: int, values: dict[str, Any], study_uid: str
) -> int | None:
    """Create the imaging session of a study and link it; None if another writer just did.

    Only the event's insert can meet the other writer's session (its study UID is unique);
    SQLite has no other writer, and undoes a failed statement alone, so needs no savepoint.
    """
    try:
        sqlite = session.connection().dialect.name == "sqlite"
        with nullcontext() if sqlite else session.begin_nested():
            event_id = insert_event(session, subject_pk, {**values, "session_study_uid": study_uid})
            add_link(session, event_id, study_uid)
        return event_id
    except IntegrityError:
        return None


# -- reading events with everything they carry --------------------------------------------------


@dataclass
class EventRow:
    """An event with its parts, as read in one go for a timeline."""

    event: Event
    links: list[tuple[str, bool]] = field(default_factory=list)
    note: ClinicalNote | None = None
    diagnosis: BaselineDiagnosis | None = None
    file: AuxFile | None = None
    model: HeartModel | None = None


def load_events(session: Session, event_ids: Sequence[int]) -> dict[int, EventRow]:
    """Events by id, each with its links (and whether the study is present) and parts."""
    rows: dict[int, EventRow] = {}
    for chunk in _chunks(list(event_ids), 500):
        for event in session.execute(select(Event).where(Event.id.in_(chunk))).scalars():
            rows[event.id] = EventRow(event)
        present = exists().where(Study.study_instance_uid == StudyLink.study_instance_uid)
        for event_pk, uid, is_present in session.execute(
            select(StudyLink.event_pk, StudyLink.study_instance_uid, present)
            .where(StudyLink.event_pk.in_(chunk))
            .order_by(StudyLink.id)
        ):
            rows[event_pk].links.append((uid, bool(is_present)))
        for model, attr in (
            (ClinicalNote, "note"),
            (BaselineDiagnosis, "diagnosis"),
            (AuxFile, "file"),
            (HeartModel, "model"),
        ):
            for part in session.execute(select(model).where(model.event_pk.in_(chunk))).scalars():
                setattr(rows[part.event_pk], attr, part)
    return rows


def find_heart_models(
    session: Session,
    *,
    name: str | None = None,
    version: str | None = None,
    fields: Sequence[tuple[str, str]] = (),
    study_uid: str | None = None,
    subject_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[tuple[str, int]]:
    """(subject ID, event id) of the heart models matching every given condition."""
    query = (
        select(Subject.subject_id, HeartModel.event_pk)
        .join(Event, Event.id == HeartModel.event_pk)
        .join(Subject, Subject.id == Event.subject_pk)
    )
    if name is not None:
        query = query.where(HeartModel.name == name)
    if version is not None:
        query = query.where(HeartModel.version == version)
    if subject_id is not None:
        query = query.where(Subject.subject_id == subject_id)
    for field_name, value in fields:
        query = query.where(
            exists().where(
                HeartModelField.event_pk == HeartModel.event_pk,
                HeartModelField.name == field_name[:128],
                HeartModelField.value == value[:255],
            )
        )
    if study_uid is not None:
        query = query.where(
            exists().where(
                StudyLink.event_pk == HeartModel.event_pk,
                StudyLink.study_instance_uid == study_uid,
            )
        )
    query = query.order_by(Subject.subject_id, Event.event_date, Event.position, Event.id)
    return [(s, int(e)) for s, e in session.execute(query.offset(offset).limit(limit))]


# -- from the imaging index ---------------------------------------------------------------------


def imaging_studies(session: Session) -> list[dict[str, Any]]:
    """Every archived study as DICOM JSON of its patient and study attributes (for a backfill)."""
    out = []
    for patient_attrs, study_attrs in session.execute(
        select(Patient.attributes, Study.attributes)
        .join(Study, Study.patient_pk == Patient.id)
        .order_by(Study.id)
    ):
        out.append({**dicomjson.loads(patient_attrs or "{}"), **dicomjson.loads(study_attrs)})
    return out


def linked_present_studies(session: Session, subject_pk: int) -> list[str]:
    """The archived studies the subject's events link to, in timeline order."""
    rows = session.execute(
        _order(
            select(StudyLink.study_instance_uid)
            .join(Event, Event.id == StudyLink.event_pk)
            .where(Event.subject_pk == subject_pk)
            .where(exists().where(Study.study_instance_uid == StudyLink.study_instance_uid))
        )
    ).scalars()
    return list(dict.fromkeys(rows))


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
