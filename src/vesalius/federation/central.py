"""The central index: site keys, pushes applied idempotently, and the search across sites.

A site key is a random secret shown once; only its SHA-256 digest is stored (as for API
tokens), so a key is checked with one indexed lookup. A key writes only its own site's
records: a record naming another ``center`` refuses the whole push.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from vesalius import jobs
from vesalius.auth import tokens
from vesalius.config import Settings
from vesalius.dicom.matching import Constraint, MatchingError, parse_constraint
from vesalius.errors import InvalidQuery
from vesalius.federation.records import RecordError, StudyRecord, check_site_code, split_modalities
from vesalius.index import federation as fed_index
from vesalius.index.engine import Database
from vesalius.index.federation import Applied, CentralFilters, CentralPage, SiteRow

SITE_KEY_PREFIX = "vsk_"
MAX_PAGE = 1000
# Rows written by pushes after which the table's statistics are refreshed (a job), so that a
# search right after a bulk push does not run on plans made for an empty table.
ANALYZE_AFTER = 10_000
ANALYZE_JOB = "central.analyze"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class WrongSite(RecordError):
    """A record names another site than the key's (answered with 403)."""


@dataclass(frozen=True)
class SearchRequest:
    """A search in plain terms: DICOM matching values (wildcards, ranges) or ``None``."""

    patient_id: str | None = None
    patient_name: str | None = None
    study_iuid: str | None = None
    study_date: str | None = None  # DICOM DA value or range: 20240101-20241231
    modality: str | None = None  # one or several: CT\MR or CT,MR
    site: str | None = None  # one or several codes, comma-separated
    limit: int = 50
    offset: int = 0


class Central:
    """The central index of a federation (``central_index = true``)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._written = 0  # rows pushed since statistics were last asked for (this process)

    @property
    def enabled(self) -> bool:
        return self.settings.central_index

    # -- sites ---------------------------------------------------------------------------------

    def add_site(self, code: str) -> str:
        """Register a site (or re-key a revoked one); returns its key, which is not kept."""
        code = check_site_code(code)
        key = SITE_KEY_PREFIX + secrets.token_urlsafe(32)
        digest = tokens.digest(key)
        self.db.run_write(
            lambda s: fed_index.add_site(s, code, digest, key[: len(SITE_KEY_PREFIX) + 6], _now())
        )
        return key

    def sites(self) -> list[SiteRow]:
        with self.db.read() as session:
            return fed_index.list_sites(session)

    def revoke_site(self, code: str) -> None:
        self.db.run_write(lambda s: fed_index.revoke_site(s, code.strip(), _now()))

    def site_for_key(self, key: str) -> SiteRow | None:
        """The live site this key belongs to, or ``None`` (unknown, malformed or revoked)."""
        key = key.strip()
        if not key.startswith(SITE_KEY_PREFIX) or len(key) > 128:
            return None
        with self.db.read() as session:
            return fed_index.site_by_key_hash(session, tokens.digest(key))

    # -- pushes --------------------------------------------------------------------------------

    def ingest(self, site: SiteRow, records: list[StudyRecord]) -> Applied:
        """Apply a checked batch of *site*'s records in one transaction (all or nothing)."""
        for index, record in enumerate(records):
            if record.center is not None and record.center != site.code:
                raise WrongSite(
                    f"record {index} is for center {record.center!r}, but this key belongs to "
                    f"site {site.code!r}: a key writes only its own site's records"
                )
        for attempt in (1, 2):
            try:
                applied = self.db.run_write(
                    lambda s: fed_index.apply_records(s, site.id, records, _now())
                )
                break
            except IntegrityError:
                # Two pushes of the same site inserted the same study at once: run again,
                # the second time it is an update.
                if attempt == 2:
                    raise
        self._written += applied.upserted + applied.deleted
        if self._written >= ANALYZE_AFTER:
            self._written = 0
            jobs.enqueue(self.db, ANALYZE_JOB, {}, dedupe_key=ANALYZE_JOB)
        return applied

    def refresh_statistics(self) -> None:
        """The ``central.analyze`` job: refresh the search's table statistics."""
        self.db.run_write(fed_index.refresh_statistics)

    # -- search --------------------------------------------------------------------------------

    def search(self, request: SearchRequest) -> CentralPage:
        """Studies across sites; raises :class:`InvalidQuery` naming a malformed value."""
        if not 0 <= request.limit <= MAX_PAGE:
            raise InvalidQuery(f"limit must be between 0 and {MAX_PAGE}")
        if request.offset < 0:
            raise InvalidQuery("offset must not be negative")
        filters = CentralFilters(
            patient_id=_constraint("PatientID", "LO", request.patient_id),
            patient_name=_constraint("PatientName", "PN", request.patient_name),
            study_iuid=_constraint("StudyInstanceUID", "UI", request.study_iuid),
            study_date=_constraint("StudyDate", "DA", request.study_date),
            modalities=tuple(split_modalities(request.modality)),
            sites=tuple(s.strip() for s in (request.site or "").split(",") if s.strip()),
            limit=request.limit,
            offset=request.offset,
        )
        with self.db.read() as session:
            return fed_index.search(session, filters, fold_pn=self.settings.case_insensitive_pn)


def _constraint(keyword: str, vr: str, value: str | None) -> Constraint | None:
    if value is not None and len(value) > 1024:
        raise InvalidQuery(f"the {keyword} value is too long")
    try:
        return parse_constraint(keyword, vr, value)
    except MatchingError as exc:
        raise InvalidQuery(f"{keyword}: {exc}") from None


def _refresh_statistics(payload: dict[str, Any], context: jobs.JobContext) -> None:
    context.container.central.refresh_statistics()


jobs.register(ANALYZE_JOB, _refresh_statistics, max_attempts=2)
