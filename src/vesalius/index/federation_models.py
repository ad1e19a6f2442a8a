"""Federation: the central index's sites and study records, and a site's push watermarks.

Schema changes go through Alembic (``0005_federation``, ``0008_central_search``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from vesalius.index.models import LO, MYSQL_TABLE, PN, UID, Base


class FederationSite(Base):
    """A site allowed to push to this central index, with the digest of its key."""

    __tablename__ = "federation_sites"
    __table_args__ = (MYSQL_TABLE,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_push_at: Mapped[datetime | None] = mapped_column(DateTime)


class FederationStudy(Base):
    """One study as a site reported it: unique by (site, study UID).

    A deletion keeps the row as a tombstone (``deleted``) with the site's change sequence
    number, so that a replayed older push cannot bring the study back.
    """

    __tablename__ = "federation_studies"
    __table_args__ = (
        UniqueConstraint("site_pk", "study_iuid"),
        # Every search is of live records, so the indexes lead with ``deleted``; they carry
        # the sort keys and the modalities so that a search counts and sorts its matches from
        # the index alone and reads only the rows of the page it returns.
        # On PostgreSQL the ID and name are indexed with the pattern operator class, so that a
        # prefix wildcard (``DOE^J*``, ``P0012*``) is an index range whatever the database's
        # collation (a LIKE uses a default-collation index only under the C locale); equality
        # uses it too (``0008_central_search``).
        Index(
            "ix_federation_studies_patient_id",
            "deleted",
            "patient_id",
            "study_date",
            "study_time",
            postgresql_ops={"patient_id": "varchar_pattern_ops"},
        ),
        Index(
            "ix_federation_studies_name_folded",
            "deleted",
            "patient_name_folded",
            "study_date",
            "study_time",
            "modalities",
            postgresql_ops={"patient_name_folded": "varchar_pattern_ops"},
        ),
        Index("ix_federation_studies_date", "deleted", "study_date", "study_time", "modalities"),
        # A modality search lists the distinct values holding it from this index, then reads
        # the ranges of those values (``0008_central_search``).
        Index(
            "ix_federation_studies_modalities", "deleted", "modalities", "study_date", "study_time"
        ),
        Index("ix_federation_studies_study_iuid", "study_iuid"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_pk: Mapped[int] = mapped_column(ForeignKey("federation_sites.id", ondelete="CASCADE"))
    study_iuid: Mapped[str] = mapped_column(String(UID))
    patient_pk: Mapped[str | None] = mapped_column(String(LO))
    patient_id: Mapped[str | None] = mapped_column(String(LO))
    patient_name: Mapped[str | None] = mapped_column(String(PN))
    patient_name_folded: Mapped[str | None] = mapped_column(String(PN))
    study_pk: Mapped[str | None] = mapped_column(String(LO))
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_time: Mapped[str | None] = mapped_column(String(16))
    study_description: Mapped[str | None] = mapped_column(String(1024))
    study_modality: Mapped[str | None] = mapped_column(String(LO))
    modalities: Mapped[str | None] = mapped_column(String(128))  # "|CT|MR|" for matching
    study_series: Mapped[int | None] = mapped_column(Integer)
    study_instances: Mapped[int | None] = mapped_column(Integer)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class IndexerState(Base):
    """A site's push to the central index, per source (``local`` or a remote PACS name)."""

    __tablename__ = "indexer_state"
    __table_args__ = (MYSQL_TABLE,)

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    watermark: Mapped[int] = mapped_column(BigInteger, default=0)
    initial_done: Mapped[bool] = mapped_column(Boolean, default=False)
    pushed_total: Mapped[int] = mapped_column(BigInteger, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class IndexerRemoteStudy(Base):
    """A remote PACS's study as last acknowledged by the central index (its digest)."""

    __tablename__ = "indexer_remote_studies"
    __table_args__ = (MYSQL_TABLE,)

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_iuid: Mapped[str] = mapped_column(String(UID), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
