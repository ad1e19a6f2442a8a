"""Index questions of federation: the central index's sites and study records, a site's push
state, and the local studies a site pushes.

The matching rules of a search are :mod:`vesalius.dicom.matching`'s, spelled in SQL by
:func:`vesalius.index.lookup.matcher_sql`, exactly as for C-FIND and QIDO-RS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, false, func, insert, select, text, update
from sqlalchemy.orm import Session

from vesalius.dicom.matching import Constraint
from vesalius.errors import Conflict, NotFound
from vesalius.federation.records import StudyRecord
from vesalius.index.federation_models import (
    FederationSite,
    FederationStudy,
    IndexerRemoteStudy,
    IndexerState,
)
from vesalius.index.lookup import matcher_sql
from vesalius.index.models import Patient, Study

# -- central index: sites ----------------------------------------------------------------------


@dataclass(frozen=True)
class SiteRow:
    id: int
    code: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_push_at: datetime | None
    studies: int = 0


def _site_row(site: FederationSite, studies: int = 0) -> SiteRow:
    return SiteRow(
        site.id,
        site.code,
        site.key_prefix,
        site.created_at,
        site.revoked_at,
        site.last_push_at,
        studies,
    )


def add_site(session: Session, code: str, key_hash: str, key_prefix: str, now: datetime) -> None:
    """Register a site, or give a revoked one a new key; a live site is a :class:`Conflict`."""
    site = session.execute(
        select(FederationSite).where(FederationSite.code == code)
    ).scalar_one_or_none()
    if site is not None and site.revoked_at is None:
        raise Conflict(
            f"site {code!r} already has a key; revoke it first (`vesalius central site revoke "
            f"{code}`) to issue a new one"
        )
    if site is None:
        session.add(
            FederationSite(code=code, key_hash=key_hash, key_prefix=key_prefix, created_at=now)
        )
    else:
        site.key_hash, site.key_prefix, site.created_at, site.revoked_at = (
            key_hash,
            key_prefix,
            now,
            None,
        )


def list_sites(session: Session) -> list[SiteRow]:
    counts = dict(
        session.execute(
            select(FederationStudy.site_pk, func.count())
            .where(FederationStudy.deleted == false())
            .group_by(FederationStudy.site_pk)
        ).all()
    )
    sites = session.execute(select(FederationSite).order_by(FederationSite.code)).scalars()
    return [_site_row(site, int(counts.get(site.id, 0))) for site in sites]


def revoke_site(session: Session, code: str, now: datetime) -> None:
    site = session.execute(
        select(FederationSite).where(FederationSite.code == code)
    ).scalar_one_or_none()
    if site is None:
        raise NotFound(f"no site {code!r} (see `vesalius central site list`)")
    if site.revoked_at is None:
        site.revoked_at = now


def site_by_key_hash(session: Session, key_hash: str) -> SiteRow | None:
    """The live (not revoked) site whose key has this digest."""
    site = session.execute(
        select(FederationSite).where(
            FederationSite.key_hash == key_hash, FederationSite.revoked_at.is_(None)
        )
    ).scalar_one_or_none()
    return _site_row(site) if site is not None else None


# -- central index: records ----------------------------------------------------------------------


_DATA_COLUMNS = (
    "patient_pk",
    "patient_id",
    "patient_name",
    "patient_name_folded",
    "study_pk",
    "study_date",
    "study_time",
    "study_description",
    "study_modality",
    "modalities",
    "study_series",
    "study_instances",
)


@dataclass
class Applied:
    """What a push changed: records written, studies removed, and stale records skipped."""

    upserted: int = 0
    deleted: int = 0
    stale: int = 0


def _values(record: StudyRecord, now: datetime) -> dict[str, Any]:
    if record.deleted:
        # A tombstone keeps no patient data, only what stops a replay from reviving it.
        return {
            **dict.fromkeys(_DATA_COLUMNS),
            "seq": record.seq,
            "deleted": True,
            "updated_at": now,
        }
    return {
        "patient_pk": record.patient_pk,
        "patient_id": record.patient_id,
        "patient_name": record.patient_name,
        "patient_name_folded": record.patient_name_folded,
        "study_pk": record.study_pk,
        "study_date": record.study_date,
        "study_time": record.study_time,
        "study_description": record.study_description,
        "study_modality": record.study_modality,
        "modalities": record.modalities,
        "study_series": record.study_series,
        "study_instances": record.study_instances,
        "seq": record.seq,
        "deleted": False,
        "updated_at": now,
    }


def apply_records(
    session: Session, site_pk: int, records: Sequence[StudyRecord], now: datetime
) -> Applied:
    """Upsert a site's records by (site, study UID), all in the caller's transaction.

    A record whose ``seq`` is older than the stored one is stale (a replayed push) and skipped;
    a record without ``seq`` (a seed-004 client) always applies. Within one batch the last
    record of a study wins.
    """
    applied = Applied()
    latest: dict[str, StudyRecord] = {}
    for record in records:
        latest[record.study_iuid] = record
    uids = list(latest)
    existing: dict[str, tuple[int, int | None, bool]] = {}
    for chunk in _chunks(uids, 500):
        for row in session.execute(
            select(
                FederationStudy.study_iuid,
                FederationStudy.id,
                FederationStudy.seq,
                FederationStudy.deleted,
            ).where(FederationStudy.site_pk == site_pk, FederationStudy.study_iuid.in_(chunk))
        ):
            existing[row[0]] = (row[1], row[2], row[3])
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for uid, record in latest.items():
        found = existing.get(uid)
        stored_seq = found[1] if found is not None else None
        if record.seq is not None and stored_seq is not None and record.seq < stored_seq:
            applied.stale += 1
            continue
        values = _values(record, now)
        if record.deleted:
            if found is None or found[2]:
                # Nothing to remove; keep the tombstone's sequence for later replays.
                if found is None:
                    inserts.append({"site_pk": site_pk, "study_iuid": uid, **values})
                elif record.seq is not None:
                    updates.append({"id": found[0], "seq": record.seq, "updated_at": now})
                continue
            applied.deleted += 1
            updates.append({"id": found[0], **values})
        else:
            applied.upserted += 1
            if found is None:
                inserts.append({"site_pk": site_pk, "study_iuid": uid, **values})
            else:
                updates.append({"id": found[0], **values})
    if inserts:
        session.execute(insert(FederationStudy), inserts)
    if updates:
        # Rows with different column sets must go in separate executemany batches.
        by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in updates:
            by_keys.setdefault(tuple(sorted(row)), []).append(row)
        for rows in by_keys.values():
            session.execute(update(FederationStudy), rows)
    session.execute(
        update(FederationSite).where(FederationSite.id == site_pk).values(last_push_at=now)
    )
    return applied


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- central index: search -----------------------------------------------------------------------


@dataclass(frozen=True)
class CentralFilters:
    patient_id: Constraint | None = None
    patient_name: Constraint | None = None
    study_iuid: Constraint | None = None
    study_date: Constraint | None = None
    modalities: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class CentralRow:
    site: str
    study_iuid: str
    patient_pk: str | None
    patient_id: str | None
    patient_name: str | None
    study_pk: str | None
    study_date: str | None
    study_time: str | None
    study_description: str | None
    study_modality: str | None
    study_series: int | None
    study_instances: int | None
    updated_at: datetime


@dataclass
class CentralPage:
    rows: list[CentralRow] = field(default_factory=list)
    total: int = 0


def _search_conditions(filters: CentralFilters, fold_pn: bool) -> list[Any]:
    # "= false" (not "IS false"), so that the indexes leading with ``deleted`` are used.
    conditions: list[Any] = [FederationStudy.deleted == false()]
    if filters.patient_id is not None:
        conditions.append(
            matcher_sql(filters.patient_id.matcher, FederationStudy.patient_id, fold=False)
        )
    if filters.patient_name is not None:
        column = FederationStudy.patient_name_folded if fold_pn else FederationStudy.patient_name
        conditions.append(matcher_sql(filters.patient_name.matcher, column, fold=fold_pn))
    if filters.study_iuid is not None:
        conditions.append(
            matcher_sql(filters.study_iuid.matcher, FederationStudy.study_iuid, fold=False)
        )
    if filters.study_date is not None:
        conditions.append(
            matcher_sql(filters.study_date.matcher, FederationStudy.study_date, fold=False)
        )
    return conditions


def _modality_values(session: Session, modalities: Sequence[str]) -> list[str]:
    """The stored ``modalities`` values (``|CT|PT|``) of live records naming any of these.

    A modality can sit anywhere in the value, so a LIKE on it would read every record; the
    values themselves are few, and a loose scan of the modality index (a recursive query, one
    index probe per distinct value) lists them, so that the search is ``modalities IN (...)``:
    index ranges.
    """
    column = FederationStudy.modalities
    live = FederationStudy.deleted == false()
    values = select(func.min(column).label("value")).where(live).cte("values", recursive=True)
    following = select(func.min(column)).where(live, column > values.c.value).scalar_subquery()
    values = values.union_all(select(following).where(values.c.value.is_not(None)))
    wanted = [f"|{m}|" for m in modalities]
    return [
        value
        for value in session.execute(
            select(values.c.value).where(values.c.value.is_not(None))
        ).scalars()
        if any(m in value for m in wanted)
    ]


def search(session: Session, filters: CentralFilters, *, fold_pn: bool) -> CentralPage:
    """A page of live study records matching *filters*, newest study first, and the total."""
    conditions = _search_conditions(filters, fold_pn)
    if filters.modalities:
        values = _modality_values(session, filters.modalities)
        if not values:
            return CentralPage()
        conditions.append(FederationStudy.modalities.in_(values))
    if filters.sites:
        site_pks = list(
            session.execute(
                select(FederationSite.id).where(FederationSite.code.in_(filters.sites))
            ).scalars()
        )
        if not site_pks:
            return CentralPage()
        # "+ 0": a site holds most of the records, so its index (the unique one) would be a
        # poor guide; the search keys' indexes are better ones, whatever the statistics say.
        conditions.append((FederationStudy.site_pk + 0).in_(site_pks))
    total = session.execute(
        select(func.count()).select_from(FederationStudy).where(and_(*conditions))
    ).scalar_one()
    page = CentralPage(total=int(total))
    if filters.limit == 0 or not total:
        return page
    # The page's keys first (from an index), then only those rows.
    ids = list(
        session.execute(
            select(FederationStudy.id)
            .where(and_(*conditions))
            .order_by(
                FederationStudy.study_date.desc(),
                FederationStudy.study_time.desc(),
                FederationStudy.id.desc(),
            )
            .limit(filters.limit)
            .offset(filters.offset)
        ).scalars()
    )
    rows = {
        study.id: study
        for study in session.execute(
            select(FederationStudy).where(FederationStudy.id.in_(ids))
        ).scalars()
    }
    codes = dict(session.execute(select(FederationSite.id, FederationSite.code)).all())
    for study in (rows[i] for i in ids):
        code = codes[study.site_pk]
        page.rows.append(
            CentralRow(
                site=code,
                study_iuid=study.study_iuid,
                patient_pk=study.patient_pk,
                patient_id=study.patient_id,
                patient_name=study.patient_name,
                study_pk=study.study_pk,
                study_date=study.study_date,
                study_time=study.study_time,
                study_description=study.study_description,
                study_modality=study.study_modality,
                study_series=study.study_series,
                study_instances=study.study_instances,
                updated_at=study.updated_at,
            )
        )
    return page


# -- a site: push state --------------------------------------------------------------------------


@dataclass(frozen=True)
class PushState:
    source: str
    watermark: int
    initial_done: bool
    pushed_total: int
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None


def push_state(session: Session, source: str) -> PushState:
    row = session.get(IndexerState, source)
    if row is None:
        return PushState(source, 0, False, 0, None, None, None)
    return PushState(
        row.source,
        row.watermark,
        row.initial_done,
        row.pushed_total,
        row.last_attempt_at,
        row.last_success_at,
        row.last_error,
    )


def record_push(
    session: Session,
    source: str,
    now: datetime,
    *,
    watermark: int | None = None,
    pushed: int = 0,
    initial_done: bool | None = None,
    error: str | None = None,
) -> None:
    """Note a push attempt; *watermark* only ever moves forward."""
    row = session.get(IndexerState, source, with_for_update=True)
    if row is None:
        row = IndexerState(
            source=source, watermark=0, initial_done=False, pushed_total=0, last_error=None
        )
        session.add(row)
    row.last_attempt_at = now
    if error is not None:
        row.last_error = error[:2000]
        return
    row.last_error = None
    row.last_success_at = now
    row.pushed_total = (row.pushed_total or 0) + pushed
    if watermark is not None and watermark > (row.watermark or 0):
        row.watermark = watermark
    if initial_done is not None:
        row.initial_done = initial_done


# -- a site: its own studies as records -----------------------------------------------------------


def _local_record(
    study: Study, patient: Patient, center: str | None, seq: int | None
) -> StudyRecord:
    return StudyRecord(
        study_iuid=study.study_instance_uid,
        seq=seq,
        patient_pk=str(patient.id),
        patient_id=patient.patient_id,
        patient_name=patient.patient_name,
        study_pk=str(study.id),
        study_date=study.study_date,
        study_time=study.study_time,
        study_description=study.study_description,
        study_modality=study.modalities_in_study,
        study_series=study.num_series,
        study_instances=study.num_instances,
        center=center,
    )


def local_studies_after(
    session: Session, after_pk: int, limit: int, center: str | None, seq: int | None
) -> tuple[list[StudyRecord], int]:
    """The next *limit* local studies by primary key after *after_pk*, and the last key."""
    rows = session.execute(
        select(Study, Patient)
        .join(Patient, Patient.id == Study.patient_pk)
        .where(Study.id > after_pk)
        .order_by(Study.id)
        .limit(limit)
    ).all()
    records = [_local_record(study, patient, center, seq) for study, patient in rows]
    last = rows[-1][0].id if rows else after_pk
    return records, last


def local_study_count(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(Study)).scalar_one())


def local_records(
    session: Session, study_uids: Sequence[str], center: str | None, seq: int | None
) -> list[StudyRecord]:
    """The current record of each study UID: its metadata, or a deletion if it is gone."""
    found: dict[str, StudyRecord] = {}
    for chunk in _chunks(list(study_uids), 500):
        for study, patient in session.execute(
            select(Study, Patient)
            .join(Patient, Patient.id == Study.patient_pk)
            .where(Study.study_instance_uid.in_(chunk))
        ).all():
            found[study.study_instance_uid] = _local_record(study, patient, center, seq)
    return [
        found.get(uid) or StudyRecord(study_iuid=uid, deleted=True, seq=seq, center=center)
        for uid in study_uids
    ]


def study_uids_of_patients(session: Session, patient_ids: Sequence[str]) -> list[str]:
    """The study UIDs this site holds for these patient IDs."""
    uids: list[str] = []
    for chunk in _chunks(list(patient_ids), 500):
        uids += session.execute(
            select(Study.study_instance_uid)
            .join(Patient, Patient.id == Study.patient_pk)
            .where(Patient.patient_id.in_(chunk))
        ).scalars()
    return uids


def remote_digests(session: Session, source: str) -> dict[str, str]:
    """The digest of each study of a remote source as the central index last acknowledged it."""
    return dict(
        session.execute(
            select(IndexerRemoteStudy.study_iuid, IndexerRemoteStudy.digest).where(
                IndexerRemoteStudy.source == source
            )
        ).all()
    )


def replace_remote_digests(
    session: Session, source: str, acknowledged: dict[str, str], gone: Sequence[str]
) -> None:
    for chunk in _chunks(list(gone) + list(acknowledged), 500):
        session.execute(
            delete(IndexerRemoteStudy).where(
                IndexerRemoteStudy.source == source, IndexerRemoteStudy.study_iuid.in_(chunk)
            )
        )
    rows = [{"source": source, "study_iuid": u, "digest": d} for u, d in acknowledged.items()]
    for start in range(0, len(rows), 1000):
        session.execute(insert(IndexerRemoteStudy), rows[start : start + 1000])


def refresh_statistics(session: Session) -> None:
    """Refresh the planner's statistics of the central index's studies table.

    After a bulk push the table has none until autovacuum (PostgreSQL) or nobody (SQLite)
    gathers them, and searches that count thousands of matches pick poor plans meanwhile.
    """
    table = FederationStudy.__tablename__
    mysql = session.get_bind().dialect.name in ("mysql", "mariadb")
    session.execute(text(f"ANALYZE TABLE {table}" if mysql else f"ANALYZE {table}"))
