"""Index questions of the web layer: stored metadata texts and where a UID path breaks.

DICOMweb ``/metadata`` is answered from the instance's stored DICOM JSON text without parsing
it, so these functions return the texts as the database holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from vesalius.index.imaging import within
from vesalius.index.models import Instance, Series, Study


@dataclass(frozen=True)
class MetadataRow:
    """One instance's stored DICOM JSON (bulk data as ``bulkdata:<tag>`` placeholders)."""

    series_instance_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    metadata_json: str


def metadata_of(
    session: Session,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[MetadataRow]:
    """The stored metadata of every instance of a study, series or single instance, in order."""
    query = (
        select(
            Series.series_instance_uid,
            Instance.sop_instance_uid,
            Instance.transfer_syntax_uid,
            Instance.metadata_json,
        )
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
    )
    query = within(query, study_uid, series_uid, sop_uid)
    return [MetadataRow(*row) for row in session.execute(query)]


def missing_part(
    session: Session,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> str | None:
    """Which part of a study/series/instance path the index does not know, in words.

    ``None`` when every given UID exists and belongs to the one above it.
    """
    study_pk = session.execute(
        select(Study.id).where(Study.study_instance_uid == study_uid)
    ).scalar()
    if study_pk is None:
        return f"study {study_uid} is not in the archive"
    series_pk = None
    if series_uid is not None:
        series_pk = session.execute(
            select(Series.id).where(
                Series.series_instance_uid == series_uid, Series.study_pk == study_pk
            )
        ).scalar()
        if series_pk is None:
            return f"series {series_uid} is not in study {study_uid}"
    if sop_uid is not None:
        query = select(Instance.id).where(Instance.sop_instance_uid == sop_uid)
        query = query.join(Series, Instance.series_pk == Series.id).where(
            Series.study_pk == study_pk
        )
        if series_pk is not None:
            query = query.where(Instance.series_pk == series_pk)
        if session.execute(query).scalar() is None:
            where = f"series {series_uid}" if series_uid else f"study {study_uid}"
            return f"instance {sop_uid} is not in {where}"
    return None
