"""Stored metadata and UID look-ups for the web layer, in the archive's terms."""

from __future__ import annotations

from vesalius.archive.service import Archive
from vesalius.errors import NotFound
from vesalius.index import webqueries
from vesalius.index.webqueries import MetadataRow


def metadata_of(
    archive: Archive, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> list[MetadataRow]:
    """Stored DICOM JSON texts of a study, series or instance.

    Raises
    ------
    NotFound
        Naming the UID the archive does not hold.
    """
    with archive.db.read() as session:
        rows = webqueries.metadata_of(session, study_uid, series_uid, sop_uid)
        if not rows:
            raise NotFound(
                webqueries.missing_part(session, study_uid, series_uid, sop_uid)
                or f"no instance found for {sop_uid or series_uid or study_uid}"
            )
    return rows


def explain_missing(
    archive: Archive, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> str:
    """A readable reason why nothing was found under a study/series/instance path."""
    with archive.db.read() as session:
        reason = webqueries.missing_part(session, study_uid, series_uid, sop_uid)
    return reason or f"no instance found for {sop_uid or series_uid or study_uid}"


def check_exists(
    archive: Archive, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
) -> None:
    """Raise NotFound naming the missing UID unless the whole path exists."""
    with archive.db.read() as session:
        reason = webqueries.missing_part(session, study_uid, series_uid, sop_uid)
    if reason is not None:
        raise NotFound(reason)
