"""The imaging index: patient -> study -> series -> instance (SQLAlchemy 2 models).

Each level keeps its matching keys as columns (normalised for comparison: dates ``YYYYMMDD``,
times ``HHMMSS.FFFFFF``, person names also in a folded case- and accent-free form), the counts
that C-FIND and QIDO-RS return, and the DICOM JSON of the attributes that belong to it. The
instance keeps its whole DICOM JSON (bulk data left out), so metadata never re-reads a file.

Schema changes go through Alembic migrations in ``index/migrations``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# MySQL's TEXT holds 64 KiB; a dataset's JSON can be larger.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Binary collation on MySQL/MariaDB so that matching is case-sensitive where DICOM says so
# (case-insensitive person names use the folded columns instead).
MYSQL_TABLE = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

UID = 64
LO = 64
PN = 256


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (
        Index("ix_patients_name_folded", "patient_name_folded"),
        Index("ix_patients_last_study_date", "last_study_date"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(LO), unique=True)
    patient_name: Mapped[str | None] = mapped_column(String(PN))
    patient_name_folded: Mapped[str | None] = mapped_column(String(PN))
    patient_birth_date: Mapped[str | None] = mapped_column(String(8))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    num_studies: Mapped[int] = mapped_column(Integer, default=0)
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    last_study_date: Mapped[str | None] = mapped_column(String(8))
    attributes: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_patient", "patient_pk"),
        Index("ix_studies_date_time", "study_date", "study_time"),
        Index("ix_studies_accession", "accession_number"),
        Index("ix_studies_referring_folded", "referring_physician_name_folded"),
        Index("ix_studies_unstable", "stable_at", "updated_at"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    study_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
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
    attributes: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    # When an instance last arrived, and when the study was declared stable (complete); a new
    # instance clears ``stable_at`` (study completeness, ``StudyStable``).
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
    stable_at: Mapped[datetime | None] = mapped_column(DateTime)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (
        Index("ix_series_study", "study_pk"),
        Index("ix_series_modality", "modality"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(LO))
    body_part_examined: Mapped[str | None] = mapped_column(String(LO))
    series_date: Mapped[str | None] = mapped_column(String(8))
    series_time: Mapped[str | None] = mapped_column(String(16))
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    attributes: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_series", "series_pk"),
        Index("ix_instances_sop_class", "sop_class_uid"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID))
    instance_number: Mapped[str | None] = mapped_column(String(16))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID))
    blob_key: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    # <algorithm>:<hex>: blake3 since revision 0009, sha256 before (vesalius.storage.digest)
    digest: Mapped[str] = mapped_column(String(80))
    origin: Mapped[str | None] = mapped_column(String(255))
    metadata_json: Mapped[str] = mapped_column(LongText)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())

    series: Mapped[Series] = relationship(back_populates="instances")


class ChangeLog(Base):
    """The change feed: one row per change to the imaging index, numbered without gaps.

    ``seq`` is handed out by :class:`ChangeCounter` in the transaction that writes the change,
    so numbers are gap-free and a reader that has seen ``seq`` N has seen every change up to N
    (a sequence or autoincrement would let a later number commit before an earlier one).
    """

    __tablename__ = "change_log"
    __table_args__ = (Index("ix_change_log_study", "study_uid"), MYSQL_TABLE)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    kind: Mapped[str] = mapped_column(String(32))
    patient_id: Mapped[str | None] = mapped_column(String(LO))
    study_uid: Mapped[str | None] = mapped_column(String(UID))
    series_uid: Mapped[str | None] = mapped_column(String(UID))
    sop_uid: Mapped[str | None] = mapped_column(String(UID))


class ChangeCounter(Base):
    """One row: the last sequence number of the change feed (its row lock orders writers)."""

    __tablename__ = "change_counter"
    __table_args__ = (MYSQL_TABLE,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)
