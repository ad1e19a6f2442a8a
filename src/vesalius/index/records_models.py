"""The research records (XPACS of seeds 000/001) as SQLAlchemy 2 models.

A subject (``PATIENT_INFO``) owns a timeline of dated events. Each event has a kind; the kinds
with their own data keep it in a one-to-one table keyed by the event (clinical note, auxiliary
file, heart model, baseline diagnosis). Any event can reference studies by
StudyInstanceUID (``STUDY_PACS``): the link stores the UID only and whether the study is present
is answered by joining the imaging ``studies`` table when it is read, so a deleted study never
leaves a link that claims otherwise.

The seed's doubly linked chain (``Prev_id``/``Next_id``) becomes an order: by date, then by an
integer position within the date that the user can change. Previous and next are derived from
that order when the timeline is read, so a move or removal cannot break a chain.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from vesalius.index.models import LO, MYSQL_TABLE, UID, Base, LongText

KEY = 255  # blob keys, file names
KIND = 32


class Subject(Base):
    """One research subject: what does not change between visits."""

    __tablename__ = "subjects"
    __table_args__ = (Index("ix_subjects_cohort", "cohort"), MYSQL_TABLE)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(LO), unique=True)
    sex: Mapped[str | None] = mapped_column(String(16))
    birth_date: Mapped[date | None] = mapped_column(Date)
    cohort: Mapped[str | None] = mapped_column(String(LO))
    description: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[str] = mapped_column(LongText)  # JSON object
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )


class Event(Base):
    """A dated entry of a subject's timeline."""

    __tablename__ = "record_events"
    __table_args__ = (
        Index("ix_record_events_order", "subject_pk", "event_date", "position"),
        Index("ix_record_events_kind", "kind"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_pk: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(KIND))
    event_date: Mapped[date] = mapped_column(Date)
    position: Mapped[int] = mapped_column(Integer)
    title: Mapped[str | None] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(LongText)
    session_number: Mapped[int | None] = mapped_column(Integer)
    # Set on the imaging session an arriving study created, so a study makes one session only
    # even when several associations store its instances at once.
    session_study_uid: Mapped[str | None] = mapped_column(String(UID), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


class StudyLink(Base):
    """An event's reference to a study of the archive (``STUDY_PACS``)."""

    __tablename__ = "record_study_links"
    __table_args__ = (
        UniqueConstraint("event_pk", "study_instance_uid"),
        Index("ix_record_study_links_study", "study_instance_uid"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_pk: Mapped[int] = mapped_column(ForeignKey("record_events.id", ondelete="CASCADE"))
    study_instance_uid: Mapped[str] = mapped_column(String(UID))


class ClinicalNote(Base):
    __tablename__ = "record_notes"
    __table_args__ = (MYSQL_TABLE,)

    event_pk: Mapped[int] = mapped_column(
        ForeignKey("record_events.id", ondelete="CASCADE"), primary_key=True
    )
    author: Mapped[str | None] = mapped_column(String(256))
    note_kind: Mapped[str | None] = mapped_column(String(LO))
    text: Mapped[str] = mapped_column(LongText)


class AuxFile(Base):
    """A file kept in the blob store under ``records/``."""

    __tablename__ = "record_files"
    __table_args__ = (MYSQL_TABLE,)

    event_pk: Mapped[int] = mapped_column(
        ForeignKey("record_events.id", ondelete="CASCADE"), primary_key=True
    )
    filename: Mapped[str] = mapped_column(String(KEY))
    media_type: Mapped[str] = mapped_column(String(KEY))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(KEY))


class HeartModel(Base):
    """A heart model (``CAP_MODEL``): a zip of its data and its XML metadata, both as blobs."""

    __tablename__ = "record_heart_models"
    __table_args__ = (
        Index("ix_record_heart_models_name", "name"),
        MYSQL_TABLE,
    )

    event_pk: Mapped[int] = mapped_column(
        ForeignKey("record_events.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str | None] = mapped_column(String(256))
    version: Mapped[str | None] = mapped_column(String(LO))
    frames: Mapped[int | None] = mapped_column(Integer)
    fields: Mapped[str] = mapped_column(LongText)  # JSON: everything the XML declares
    data_filename: Mapped[str] = mapped_column(String(KEY))
    data_key: Mapped[str] = mapped_column(String(KEY))
    data_size: Mapped[int] = mapped_column(BigInteger)
    data_sha256: Mapped[str] = mapped_column(String(64))
    xml_filename: Mapped[str] = mapped_column(String(KEY))
    xml_key: Mapped[str] = mapped_column(String(KEY))
    xml_size: Mapped[int] = mapped_column(BigInteger)
    xml_sha256: Mapped[str] = mapped_column(String(64))


class HeartModelField(Base):
    """One field the model's XML declares, for searching (values cut to 255 characters)."""

    __tablename__ = "record_heart_model_fields"
    __table_args__ = (
        Index("ix_record_heart_model_fields_name_value", "name", "value"),
        Index("ix_record_heart_model_fields_event", "event_pk"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_pk: Mapped[int] = mapped_column(
        ForeignKey("record_heart_models.event_pk", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(String(255))


class BaselineDiagnosis(Base):
    """The common lab report of an imaging session; ``extra`` holds any further measure."""

    __tablename__ = "record_diagnoses"
    __table_args__ = (MYSQL_TABLE,)

    event_pk: Mapped[int] = mapped_column(
        ForeignKey("record_events.id", ondelete="CASCADE"), primary_key=True
    )
    height_cm: Mapped[float | None] = mapped_column(Double)
    weight_kg: Mapped[float | None] = mapped_column(Double)
    heart_rate_bpm: Mapped[int | None] = mapped_column(Integer)
    systolic_bp_mmhg: Mapped[int | None] = mapped_column(Integer)
    diastolic_bp_mmhg: Mapped[int | None] = mapped_column(Integer)
    diagnosis: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[str] = mapped_column(LongText)  # JSON object
