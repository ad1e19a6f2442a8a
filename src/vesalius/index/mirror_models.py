"""The remote PACS mirror: patient, study and series metadata of each ``[[remote_pacs]]``,
kept apart from the archive's own rows, and the retrievals that make a remote study local.

Remote rows live in their own tables (``remote_patients`` -> ``remote_studies`` ->
``remote_series``) and never in ``patients``/``studies``/``series``: C-FIND, C-GET, C-MOVE,
WADO and delete keep answering from the archive's rows alone, so a remote study is never
reported as retrievable here before it has been retrieved, and an instance found by its UIDs
is always an instance this archive holds (invariant 7). The worklist and QIDO-RS read both,
and name each row's ``source``. A study that is local is not kept as a remote row.

Schema changes go through Alembic (``0006_remote_mirror``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from vesalius.index.models import LO, MYSQL_TABLE, PN, UID, Base, LongText

SOURCE = 64


class RemotePatient(Base):
    """A patient as a remote PACS lists it, with the counters the worklist reads."""

    __tablename__ = "remote_patients"
    __table_args__ = (
        UniqueConstraint("source", "patient_id"),
        Index("ix_remote_patients_name_folded", "patient_name_folded"),
        Index("ix_remote_patients_last_study_date", "last_study_date"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(SOURCE))
    patient_id: Mapped[str] = mapped_column(String(LO))
    patient_name: Mapped[str | None] = mapped_column(String(PN))
    patient_name_folded: Mapped[str | None] = mapped_column(String(PN))
    patient_birth_date: Mapped[str | None] = mapped_column(String(8))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    num_studies: Mapped[int] = mapped_column(Integer, default=0)
    last_study_date: Mapped[str | None] = mapped_column(String(8))


class RemoteStudy(Base):
    """A remote PACS's study: its matching keys, the remote's counts, and its DICOM JSON."""

    __tablename__ = "remote_studies"
    __table_args__ = (
        UniqueConstraint("source", "study_instance_uid"),
        Index("ix_remote_studies_patient", "patient_pk"),
        Index("ix_remote_studies_date", "source", "study_date"),
        Index("ix_remote_studies_uid", "study_instance_uid"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(SOURCE))
    patient_pk: Mapped[int] = mapped_column(ForeignKey("remote_patients.id", ondelete="CASCADE"))
    study_instance_uid: Mapped[str] = mapped_column(String(UID))
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_time: Mapped[str | None] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(LO))
    study_id: Mapped[str | None] = mapped_column(String(LO))
    study_description: Mapped[str | None] = mapped_column(String(LO))
    referring_physician_name: Mapped[str | None] = mapped_column(String(PN))
    referring_physician_name_folded: Mapped[str | None] = mapped_column(String(PN))
    modalities_in_study: Mapped[str | None] = mapped_column(String(LO))
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    attributes: Mapped[str] = mapped_column(LongText)  # patient and study level DICOM JSON
    digest: Mapped[str] = mapped_column(String(64))
    seen_sync: Mapped[int] = mapped_column(BigInteger, default=0)
    synced_at: Mapped[datetime] = mapped_column(DateTime)


class RemoteSeries(Base):
    __tablename__ = "remote_series"
    __table_args__ = (Index("ix_remote_series_study", "study_pk"), MYSQL_TABLE)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("remote_studies.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(String(UID))
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(LO))
    num_instances: Mapped[int] = mapped_column(Integer, default=0)


class MirrorState(Base):
    """One remote PACS's mirror: the StudyDate watermark of the next incremental sync."""

    __tablename__ = "mirror_state"
    __table_args__ = (MYSQL_TABLE,)

    source: Mapped[str] = mapped_column(String(SOURCE), primary_key=True)
    watermark: Mapped[str | None] = mapped_column(String(8))  # YYYYMMDD, None before the first
    sync_number: Mapped[int] = mapped_column(BigInteger, default=0)
    studies: Mapped[int] = mapped_column(Integer, default=0)
    last_full_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class RemoteRetrieval(Base):
    """A remote study being fetched into the archive (a ``mirror.retrieve`` job)."""

    __tablename__ = "remote_retrievals"
    __table_args__ = (
        Index("ix_remote_retrievals_study", "source", "study_instance_uid"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(SOURCE))
    study_instance_uid: Mapped[str] = mapped_column(String(UID))
    job_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # queued, running, done, failed
    method: Mapped[str | None] = mapped_column(String(16))  # wado-rs, c-get
    total: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
