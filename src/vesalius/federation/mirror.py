"""The remote PACS mirror: ``[[remote_pacs]]`` studies listed beside the archive's own, and
fetched into the archive on demand.

**Sync** (``vesalius mirror sync [NAME]``, and the ``mirror.sync`` job of ``serve`` every
``mirror_interval_s``). The remote is listed over QIDO-RS (``dicomweb_url``) or C-FIND
(``ae_title``/``host``/``port``); each study's patient and study attributes and, for studies
that are new or changed (a digest of what the remote answered), its series are written to the
mirror tables, one transaction per batch of :data:`BATCH` studies.

*Incremental after the first run, by StudyDate.* Neither QIDO-RS nor C-FIND can ask "what
arrived since", so the watermark is a StudyDate: an incremental sync lists only studies dated
from the watermark on, and the watermark becomes the day before the sync *started* (UTC; a
day of margin for the remote's own time zone). New studies are nearly always recent ones, so
this lists a handful of studies instead of the whole PACS. What it cannot see (an old study
sent to the remote late, a study deleted outside the listed range, a study without a date) is
caught by a full sync, which ``serve`` runs when the last one is older than
:data:`FULL_EVERY` and ``vesalius mirror sync --full`` runs at any time. The watermark moves
only after the listing completed and the last batch committed.

**Retrieve** (``POST /api/remote/{name}/studies/{study}/retrieve``, or the portal's button):
a ``mirror.retrieve`` job fetches the study's instances into the archive, over WADO-RS from a
DICOMweb remote (the files as the remote holds them, ``transfer-syntax=*``) or C-GET from a
DIMSE one, counting instances as they are stored; the retrieval's row says how far it got and,
when it fails, why. Once complete, the remote rows go and the study is local.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from vesalius.config import RemotePacs, Settings
from vesalius.dicom import dicomjson
from vesalius.dicom.dicomjson import DicomJson
from vesalius.dicom.levels import PATIENT_ATTRIBUTES, STUDY_ATTRIBUTES
from vesalius.errors import NotFound
from vesalius.federation.remote import FindSource, QidoSource, RemoteError
from vesalius.index import mirror as sql
from vesalius.index.engine import Database

log = logging.getLogger("vesalius.mirror")

SYNC = "mirror.sync"
RETRIEVE = "mirror.retrieve"
BATCH = 500
LOOKBACK = dt.timedelta(days=1)
FULL_EVERY = dt.timedelta(hours=24)

STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYWORDS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
)
_KEEP = set(PATIENT_ATTRIBUTES) | set(STUDY_ATTRIBUTES) | {"SpecificCharacterSet"}
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class MirrorError(Exception):
    """A sync or a retrieval could not be done; the message says which remote and why."""


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _uid(value: Any) -> str | None:
    if isinstance(value, str) and len(value) <= 64 and _UID.match(value):
        return value
    return None


def _count(data: DicomJson, keyword: str) -> int:
    values = dicomjson.value_strings(data.get(dicomjson.tag_key(keyword)))
    try:
        return max(0, int(float(values[0]))) if values else 0
    except ValueError:
        return 0


_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_VR = re.compile(r"^[A-Z]{2}$")
_PN_PARTS = ("Alphabetic", "Ideographic", "Phonetic")


def _bad(where: str, why: str) -> RemoteError:
    return RemoteError(f"{where} is not valid DICOM JSON: {why}")


def _dataset_json(item: Any, where: str) -> DicomJson:
    """An untrusted DICOM JSON object, checked element by element (tags, VRs, value types)
    and copied; sequences and bulk data are left out (a listing has no use for them)."""
    if not isinstance(item, dict):
        raise RemoteError(f"{where} is not a DICOM JSON object")
    out: DicomJson = {}
    for tag, element in item.items():
        if not isinstance(tag, str) or not _TAG.match(tag) or not isinstance(element, dict):
            raise _bad(where, f"element {str(tag)[:20]!r}")
        vr = element.get("vr")
        if not isinstance(vr, str) or not _VR.match(vr):
            raise _bad(where, f"element {tag} has no VR")
        if vr == "SQ" or "InlineBinary" in element or "BulkDataURI" in element:
            continue
        values = element.get("Value")
        clean: dict[str, Any] = {"vr": vr}
        if values is not None:
            if not isinstance(values, list):
                raise _bad(where, f"element {tag}'s Value is not a list")
            kept: list[Any] = []
            for value in values:
                if value is None or (
                    isinstance(value, (int, float)) and not isinstance(value, bool)
                ):
                    kept.append(value)
                elif isinstance(value, str):
                    kept.append(value[:1024])
                elif vr == "PN" and isinstance(value, dict):
                    kept.append(
                        {
                            k: str(value[k])[:1024]
                            for k in _PN_PARTS
                            if isinstance(value.get(k), str)
                        }
                    )
                else:
                    raise _bad(where, f"element {tag} holds a {type(value).__name__}")
            if kept:
                clean["Value"] = kept
        out[tag.upper()] = clean
    return out


def study_from_item(item: Any, where: str) -> sql.MirroredStudy:
    """A study of a remote listing (untrusted DICOM JSON) as the mirror keeps it."""
    data = _dataset_json(item, where)
    uid = _uid(dicomjson.first_string(data, "StudyInstanceUID"))
    if uid is None:
        raise RemoteError(f"{where} has no valid StudyInstanceUID")
    modalities = [
        m.strip()[:16]
        for m in dicomjson.value_strings(data.get(dicomjson.tag_key("ModalitiesInStudy")))
        if m.strip()
    ]
    kept = {k: v for k, v in dicomjson.subset(data, _KEEP).items()}
    digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return sql.MirroredStudy(
        study_instance_uid=uid,
        patient_id=(dicomjson.first_string(data, "PatientID") or "").strip()[:64],
        data=kept,
        num_series=_count(data, "NumberOfStudyRelatedSeries"),
        num_instances=_count(data, "NumberOfStudyRelatedInstances"),
        modalities=sorted(set(modalities)),
        digest=digest,
    )


def series_from_item(item: Any, where: str) -> sql.MirroredSeries:
    data = _dataset_json(item, where)
    uid = _uid(dicomjson.first_string(data, "SeriesInstanceUID"))
    if uid is None:
        raise RemoteError(f"{where} has no valid SeriesInstanceUID")
    return sql.MirroredSeries(
        series_instance_uid=uid,
        modality=dicomjson.first_string(data, "Modality"),
        series_number=dicomjson.first_string(data, "SeriesNumber"),
        series_description=dicomjson.first_string(data, "SeriesDescription"),
        num_instances=_count(data, "NumberOfSeriesRelatedInstances"),
    )


@dataclass
class SyncResult:
    source: str
    full: bool
    listed: int = 0
    written: int = 0
    removed: int = 0
    batches: int = 0
    seconds: float = 0.0
    watermark: str | None = None


Progress = Callable[[int], None]


class Mirror:
    """Syncs and retrievals of the ``[[remote_pacs]]`` of one Vesalius."""

    def __init__(self, settings: Settings, db: Database, timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.db = db
        self.timeout_s = timeout_s

    # -- configuration ---------------------------------------------------------------------

    def pacs(self, name: str) -> RemotePacs:
        pacs = self.settings.find_remote_pacs(name)
        if pacs is None:
            known = ", ".join(p.name for p in self.settings.remote_pacs) or "none"
            raise NotFound(
                f"no [[remote_pacs]] named {name!r} (configured: {known}); declare it in the "
                "configuration file or VESALIUS_REMOTE_PACS"
            )
        return pacs

    def _source(self, pacs: RemotePacs) -> QidoSource | FindSource:
        if pacs.dicomweb_url:
            return QidoSource(pacs, timeout_s=self.timeout_s)
        return FindSource(pacs, self.settings.ae_title, timeout_s=self.timeout_s)

    def status(self, name: str) -> sql.MirrorStateRow:
        self.pacs(name)
        with self.db.read() as session:
            return sql.get_state(session, name)

    # -- sync ------------------------------------------------------------------------------

    def sync(
        self, name: str, *, full: bool = False, progress: Progress | None = None
    ) -> SyncResult:
        """Copy the remote's patients, studies and series into the mirror (see the module)."""
        pacs = self.pacs(name)
        started = time.monotonic()
        with self.db.read() as session:
            state = sql.get_state(session, name)
        stale_full = state.last_full_at is None or (
            dt.datetime.now(dt.UTC).replace(tzinfo=None) - state.last_full_at > FULL_EVERY
        )
        full = full or state.watermark is None or stale_full
        date_from = None if full else state.watermark
        next_watermark = (_today() - LOOKBACK).strftime("%Y%m%d")
        sync_number = self.db.run_write(lambda s: sql.begin_sync(s, name))
        result = SyncResult(name, full)
        source = self._source(pacs)
        try:
            batch: dict[str, sql.MirroredStudy] = {}
            for item in source.study_items(STUDY_KEYWORDS, date_from):
                study = study_from_item(item, f"remote PACS {name!r}: study {result.listed}")
                batch[study.study_instance_uid] = study
                result.listed += 1
                if len(batch) >= BATCH:
                    self._write_batch(name, source, sync_number, list(batch.values()), result)
                    batch = {}
                    if progress is not None:
                        progress(result.listed)
            if batch:
                self._write_batch(name, source, sync_number, list(batch.values()), result)
            result.removed = self.db.run_write(
                lambda s: sql.finish_sync(
                    s,
                    name,
                    sync_number,
                    date_from=date_from,
                    watermark=next_watermark,
                    full=full,
                )
            )
        except RemoteError as exc:
            message = str(exc)
            if f"{name!r}" not in message:
                message = f"remote PACS {name!r}: {message}"
            self.db.run_write(lambda s: sql.note_failure(s, name, message))
            raise MirrorError(message) from None
        finally:
            source.close()
        if progress is not None:
            progress(result.listed)
        result.watermark = next_watermark
        result.seconds = time.monotonic() - started
        log.info(
            "mirror of %s: %s sync, %d listed, %d written, %d removed in %.1f s (watermark %s)",
            name,
            "full" if full else f"incremental from {date_from}",
            result.listed,
            result.written,
            result.removed,
            result.seconds,
            next_watermark,
        )
        return result

    def _write_batch(
        self,
        name: str,
        source: QidoSource | FindSource,
        sync_number: int,
        studies: list[sql.MirroredStudy],
        result: SyncResult,
    ) -> None:
        with self.db.read() as session:
            known = sql.known_digests(session, name, [s.study_instance_uid for s in studies])
        changed = [s for s in studies if known.get(s.study_instance_uid) != s.digest]
        unchanged = [s.study_instance_uid for s in studies if s not in changed]
        grouped: dict[str, list[Any]] = {}
        if changed:
            uids = [s.study_instance_uid for s in changed]
            for item in source.series_of_studies(uids, SERIES_KEYWORDS):
                # whose series it is (the item itself is checked by series_from_item)
                element = item.get("0020000D") if isinstance(item, dict) else None
                values = element.get("Value") if isinstance(element, dict) else None
                owner = _uid(values[0]) if isinstance(values, list) and values else None
                if owner is not None:
                    grouped.setdefault(owner, []).append(item)
        for study in changed:
            items = grouped.get(study.study_instance_uid, [])
            if not items or len(items) < study.num_series:  # no list matching there
                items = source.series_items(study.study_instance_uid, SERIES_KEYWORDS)
            study.series = [
                series_from_item(
                    item, f"remote PACS {name!r}: a series of {study.study_instance_uid}"
                )
                for item in items
            ]
            if not study.modalities:
                study.modalities = sorted({s.modality for s in study.series if s.modality})
            if not study.num_series:
                study.num_series = len(study.series)
        self.db.run_write(lambda s: sql.apply_batch(s, name, sync_number, changed, unchanged))
        result.written += len(changed)
        result.batches += 1

    def sync_all(self, *, full: bool = False) -> list[SyncResult | MirrorError]:
        """Sync every remote; one that fails does not stop the others."""
        results: list[SyncResult | MirrorError] = []
        for pacs in self.settings.remote_pacs:
            try:
                results.append(self.sync(pacs.name, full=full))
            except MirrorError as exc:
                results.append(exc)
        return results

    # -- QIDO-RS: remote studies beside local ones ------------------------------------------

    def find_studies(
        self, archive: Any, query: Any, source: str | None
    ) -> list[tuple[DicomJson, str]]:
        """Studies matching a study-level *query*, each with its source: the archive's own
        (``local``) first, then the mirrored ones, limit and offset across both; *source*
        keeps one of them. Raises NotFound for a source that is neither."""
        from dataclasses import replace

        if source not in (None, sql.LOCAL):
            self.pacs(str(source))
        with self.db.read() as session:
            any_remote = sql.any_remote(session)
        if source == sql.LOCAL or (source is None and not any_remote):
            return [(r, sql.LOCAL) for r in archive.find(query)]
        found: list[tuple[DicomJson, str]] = []
        offset, limit = query.offset, query.limit
        if source is None:
            found = [(r, sql.LOCAL) for r in archive.find(query)]
            if limit is not None and len(found) >= limit:
                return found
            if found or offset == 0:
                local_total = offset + len(found)
            else:  # the page starts past the local studies: how many are there?
                local_total = len(archive.find(replace(query, limit=None, offset=0)))
            offset = max(0, offset - local_total)
            limit = None if limit is None else limit - len(found)
        found += self._find_remote(query.constraints, source, limit, offset)
        return found

    def _find_remote(
        self, constraints: list[Any], source: str | None, limit: int | None, offset: int
    ) -> list[tuple[DicomJson, str]]:
        from vesalius.archive.query import _matches_all

        fold = self.settings.case_insensitive_pn
        other = [c for c in constraints if not sql.remote_is_indexed(c.keyword)]
        with self.db.read() as session:
            matches = sql.find_remote_studies(
                session,
                constraints,
                source=source,
                fold_pn=fold,
                limit=None if other else limit,
                offset=0 if other else offset,
            )
        if other:
            matches = [m for m in matches if _matches_all(m.data, other, fold)]
            end = None if limit is None else offset + limit
            matches = matches[offset:end]
        return [(m.data, m.source) for m in matches]

    # -- retrieve --------------------------------------------------------------------------

    def request_retrieve(self, name: str, study_uid: str) -> sql.RetrievalRow:
        """Queue the retrieval of a remote study (or return the one under way)."""
        from vesalius import jobs

        self.pacs(name)
        with self.db.read() as session:
            if sql.remote_study(session, name, study_uid) is None:
                raise NotFound(f"remote PACS {name!r} has no study {study_uid} in the mirror")

        def queue(session: Any) -> sql.RetrievalRow:
            row, new = sql.open_retrieval(session, name, study_uid)
            if new:
                job_id = jobs.enqueue(
                    session, RETRIEVE, {"retrieval": row.id}, dedupe_key=f"{RETRIEVE}:{row.id}"
                )
                sql.set_retrieval_job(session, row.id, job_id)
            return row

        row = self.db.run_write(queue)
        from vesalius.jobs.registry import _wake

        _wake()  # a runner of this process starts it now rather than at its next poll
        return self.retrieval(row.id)

    def retrieval(self, retrieval_id: int) -> sql.RetrievalRow:
        with self.db.read() as session:
            row = sql.get_retrieval(session, retrieval_id)
        if row is None:
            raise NotFound(f"no retrieval {retrieval_id}")
        return row

    def last_retrieval(self, name: str, study_uid: str) -> sql.RetrievalRow | None:
        with self.db.read() as session:
            return sql.last_retrieval(session, name, study_uid)

    def run_retrieval(self, retrieval_id: int, archive: Any) -> sql.RetrievalRow:
        """The body of the ``mirror.retrieve`` job: fetch, store, count; on failure say why."""
        row = self.retrieval(retrieval_id)
        if row.state in ("done", "failed"):
            return row
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        try:
            pacs = self.pacs(row.source)
            method = "wado-rs" if pacs.dicomweb_url else "c-get"
            self.db.run_write(
                lambda s: sql.update_retrieval(
                    s, retrieval_id, state="running", started_at=now, method=method, error=None
                )
            )
            fetch = _fetch_wado if pacs.dicomweb_url else _fetch_cget
            stored = fetch(self, pacs, row.study_instance_uid, retrieval_id, archive)
        except Exception as exc:  # said on the page and in the API, then the job is dead
            message = str(exc) or type(exc).__name__
            if not isinstance(exc, (RemoteError, MirrorError, NotFound)):
                message = f"{type(exc).__name__}: {message}"
            self.db.run_write(
                lambda s: sql.update_retrieval(
                    s,
                    retrieval_id,
                    state="failed",
                    error=message[:4000],
                    finished_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
                )
            )
            log.warning(
                "retrieval %d of %s failed: %s", retrieval_id, row.study_instance_uid, message
            )
            raise MirrorError(message) from None

        def finish(session: Any) -> None:
            sql.forget_study(session, None, row.study_instance_uid)
            sql.update_retrieval(
                session,
                retrieval_id,
                state="done",
                done=stored,
                finished_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
            )

        self.db.run_write(finish)
        log.info(
            "retrieved study %s from %s: %d instances", row.study_instance_uid, row.source, stored
        )
        return self.retrieval(retrieval_id)

    def _progress(self, retrieval_id: int, **values: Any) -> None:
        self.db.run_write(lambda s: sql.update_retrieval(s, retrieval_id, **values))


def _fetch_wado(
    mirror: Mirror, pacs: RemotePacs, study_uid: str, retrieval_id: int, archive: Any
) -> int:
    """WADO-RS of the whole study, each part streamed to a spool and stored as received."""
    import httpx

    from vesalius.archive.parse import Part10Writer
    from vesalius.web.dicomweb.multipart import (
        MultipartError,
        MultipartReader,
        PartData,
        PartEnd,
        PartStart,
    )

    source = QidoSource(pacs, timeout_s=mirror.timeout_s)
    name = pacs.name
    try:
        listed = source.instance_items(study_uid)
        total = len(listed)
        if total == 0:
            raise RemoteError(f"remote PACS {name!r} lists no instances of study {study_uid}")
        mirror._progress(retrieval_id, total=total, done=0)
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        stored = 0
        last_note = time.monotonic()
        try:
            with source.client.stream(
                "GET", f"/studies/{study_uid}", headers={"Accept": accept}
            ) as answer:
                if answer.status_code != 200:
                    answer.read()
                    raise RemoteError(
                        f"remote PACS {name!r} answered {answer.status_code} to the retrieval "
                        f"of study {study_uid}: {answer.text[:200]}"
                    )
                content_type = answer.headers.get("content-type", "")
                match = re.search(r'boundary="?([^";]+)"?', content_type)
                if not content_type.lower().startswith("multipart/related") or match is None:
                    raise RemoteError(
                        f"remote PACS {name!r} answered the retrieval of study {study_uid} "
                        f"with {content_type or 'no content type'}, not multipart/related"
                    )
                reader = MultipartReader(match.group(1))
                writer = None
                try:
                    for chunk in answer.iter_bytes():
                        for event in reader.events(chunk):
                            if isinstance(event, PartStart):
                                writer = Part10Writer(archive.blobs.spool())
                            elif isinstance(event, PartData) and writer is not None:
                                writer.write(event.data)
                            elif isinstance(event, PartEnd) and writer is not None:
                                writer.close()
                                spool, writer = writer.spool, None
                                archive.store_spool(spool, f"remote:{name}", study_uid=study_uid)
                                stored += 1
                                if time.monotonic() - last_note > 0.5 or stored == total:
                                    mirror._progress(retrieval_id, done=stored)
                                    last_note = time.monotonic()
                finally:
                    if writer is not None:
                        writer.spool.discard()
                if not reader.finished:
                    raise RemoteError(
                        f"remote PACS {name!r} cut the retrieval of study {study_uid} short "
                        f"after {stored} of {total} instances"
                    )
        except httpx.HTTPError as exc:
            raise RemoteError(
                f"remote PACS {name!r} went away during the retrieval of study {study_uid} "
                f"after {stored} of {total} instances: {exc or type(exc).__name__}"
            ) from None
        except MultipartError as exc:
            raise RemoteError(
                f"remote PACS {name!r} answered the retrieval of study {study_uid} with a "
                f"broken multipart body: {exc}"
            ) from None
    finally:
        source.close()
    if stored < total:
        raise RemoteError(
            f"remote PACS {name!r} sent {stored} of the {total} instances of study {study_uid}"
        )
    mirror._progress(retrieval_id, done=stored)
    return stored


# What a C-GET offers to receive: the usual uncompressed and compressed syntaxes, so that
# the remote can send each instance as it holds it.
_CGET_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still met)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
_MAX_CLASSES = 100  # presentation contexts: 128 at most, one for C-GET itself


def _fetch_cget(
    mirror: Mirror, pacs: RemotePacs, study_uid: str, retrieval_id: int, archive: Any
) -> int:
    """C-GET of the whole study; each instance stored as it arrives.

    The SOP classes to accept are learnt first from an image-level C-FIND (which also gives
    the total for the progress)."""
    from pydicom import Dataset
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    from vesalius.dimse.scu import set_nodelay

    name = pacs.name
    finder = FindSource(pacs, mirror.settings.ae_title, timeout_s=mirror.timeout_s)
    try:
        assoc = finder._associate()
        try:
            keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": "", "SOPInstanceUID": ""}
            keys["SOPClassUID"] = ""
            items = list(finder._find(assoc, "IMAGE", keys))
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        finder.close()
    total = len(items)
    if total == 0:
        raise RemoteError(f"remote PACS {name!r} lists no instances of study {study_uid}")
    classes = sorted(
        {
            c
            for item in items
            if (
                c := _uid(dicomjson.first_string(_dataset_json(item, "an instance"), "SOPClassUID"))
            )
        }
    )
    if not classes:
        raise RemoteError(
            f"remote PACS {name!r} does not say the SOP classes of study {study_uid}'s "
            "instances (SOPClassUID), which a C-GET needs"
        )
    if len(classes) > _MAX_CLASSES:
        raise RemoteError(f"study {study_uid} holds more SOP classes than one C-GET can take")
    mirror._progress(retrieval_id, total=total, done=0)

    stored = 0
    failures: list[str] = []
    last_note = time.monotonic()

    def on_store(event: Any) -> int:
        nonlocal stored, last_note
        try:
            archive.store(
                event.encoded_dataset(include_meta=True), f"remote:{name}", study_uid=study_uid
            )
        except Exception as exc:  # refused here: the remote counts a failed sub-operation
            failures.append(str(exc) or type(exc).__name__)
            return 0xA700
        stored += 1
        if time.monotonic() - last_note > 0.5:
            mirror._progress(retrieval_id, done=stored)
            last_note = time.monotonic()
        return 0x0000

    ae = AE(ae_title=mirror.settings.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = mirror.timeout_s
    ae.add_requested_context(GET)
    for sop_class in classes:
        ae.add_requested_context(sop_class, list(_CGET_SYNTAXES))
    roles = [build_role(c, scp_role=True) for c in classes]
    assoc = ae.associate(
        pacs.host,
        pacs.port,
        ae_title=pacs.ae_title,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, set_nodelay)],
    )
    if not assoc.is_established:
        raise RemoteError(
            f"remote PACS {name!r} ({pacs.ae_title}@{pacs.host}:{pacs.port}) cannot be reached "
            "or refused the C-GET association"
        )
    final: int | None = None
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        for status, _identifier in assoc.send_c_get(query, GET):
            if status is None or "Status" not in status:
                raise RemoteError(
                    f"remote PACS {name!r} stopped answering the C-GET of study {study_uid} "
                    f"after {stored} of {total} instances (timed out or gone)"
                )
            code = int(status.Status)
            if code not in (0xFF00, 0xFF01):
                final = code
    finally:
        if assoc.is_established:
            assoc.release()
    if failures:
        raise MirrorError(
            f"{len(failures)} instances of study {study_uid} from {name!r} could not be "
            f"stored: {failures[0]}"
        )
    if final not in (0x0000, 0xB000) or stored < total:
        raise RemoteError(
            f"remote PACS {name!r} ended the C-GET of study {study_uid} with status "
            f"0x{(final or 0):04X} after {stored} of {total} instances"
        )
    mirror._progress(retrieval_id, done=stored)
    return stored
