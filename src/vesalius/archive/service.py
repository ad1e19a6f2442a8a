"""The archive service: the rules of storing, finding, retrieving and deleting instances.

Every protocol (DIMSE, DICOMweb, the command line) calls this class; none of them touches the
index or the blob store directly. The write order keeps two invariants: an acknowledged store
is durable (blob fsync'd, then rows committed, then the answer), and a failed store leaves
nothing behind (the blob is removed when the rows cannot be written).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, BinaryIO

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from vesalius import jobs
from vesalius.archive.group_commit import GroupCommit, RunIsolated, first_pass
from vesalius.archive.inline import Background, Commit, Steps, run_steps
from vesalius.archive.parse import (
    ParsedInstance,
    parse_file,
    parse_instance,
    parse_spool,
    write_spool,
)
from vesalius.archive.query import Query, run_query, select_instances, uid_query
from vesalius.config import DuplicatePolicy, Settings
from vesalius.dicom.dicomjson import DicomJson, first_string
from vesalius.dicom.levels import Level
from vesalius.dicom.matching import Constraint
from vesalius.dicom.transcode import for_storage
from vesalius.errors import InstanceRejected, InvalidInstance, NotFound, StudyMismatch
from vesalius.events import (
    EventBus,
    InstancesDeleted,
    InstanceStored,
    StudyCreated,
    StudyStable,
)
from vesalius.index import imaging
from vesalius.index.engine import Database
from vesalius.index.imaging import InstanceRecord
from vesalius.storage import digest as digests
from vesalius.storage.base import BlobInfo, BlobStore, PlacedBlob
from vesalius.storage.spool import Spool

log = logging.getLogger(__name__)

DICOM_PREFIX = "dicom/"
# How long before the index log's last flush start-up looks for unindexed files: more than the
# time from a file put in place to its rows' commit, even on a busy machine.
RECOVERY_MARGIN_S = 120.0


class StoreStatus(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical instance already archived
    KEPT_FIRST = "kept_first"  # a different instance with the same UID was already archived
    REPLACED = "replaced"


@dataclass(frozen=True)
class StoreOutcome:
    status: StoreStatus
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str

    @property
    def is_new(self) -> bool:
        return self.status in (StoreStatus.STORED, StoreStatus.REPLACED)


def blob_key_for(parsed: ParsedInstance) -> str:
    """A key that never collides: the hour it was written (UTC), then one of 256 folders
    chosen by the study (``dicom/YYYY/MM/DD/HH/3f/<SOP Instance UID>.<random>.dcm``); unique
    per write.

    The hour lets start-up find the files written since the index log's last flush
    (:meth:`Archive.recover_unflushed`) without walking the whole store. A study's files of
    one hour share a folder, and the folders of an hour exist after its first few hundred
    studies: a folder per study cost every one-image study a new folder and two more folder
    fsyncs (one-image STOW-RS: +11% instances/s with the 256, 6 of 6 interleaved rounds).
    """
    h = hashlib.sha1(parsed.study_instance_uid.encode()).hexdigest()
    return f"{hour_prefix(time.time())}{h[:2]}/{parsed.sop_instance_uid}.{secrets.token_hex(4)}.dcm"


def hour_prefix(moment: float) -> str:
    """``dicom/YYYY/MM/DD/HH/``: where the files stored in that hour (UTC) go."""
    return time.strftime(f"{DICOM_PREFIX}%Y/%m/%d/%H/", time.gmtime(moment))


@dataclass(frozen=True)
class NewStudy:
    """What a study hook gets: the first instance of a study, as DICOM JSON."""

    study_instance_uid: str
    patient_id: str | None
    data: DicomJson


# Work that must commit with the first instance of a study (and that ``vesalius reindex``
# redoes, since a rebuild indexes every study again).
StudyHookFn = Callable[[Session, NewStudy], None]


@dataclass(frozen=True)
class StudyHook:
    name: str
    run: StudyHookFn


@dataclass(frozen=True)
class Incoming:
    """An instance about to be stored, as an instance filter sees it (parsed up to its pixel
    data; :meth:`read` gives the whole file)."""

    parsed: ParsedInstance
    origin: str | None
    spool: Spool

    @property
    def json(self) -> DicomJson:
        return self.parsed.json

    def get(self, keyword: str) -> str | None:
        """The first value of an attribute, as text (None when absent)."""
        return first_string(self.parsed.json, keyword)

    def read(self) -> bytes:
        """The whole file as received (this reads it into memory)."""
        return self.spool.path.read_bytes()


@dataclass(frozen=True)
class Reject:
    """A filter's answer: refuse the instance, telling the sender *reason*."""

    reason: str


@dataclass(frozen=True)
class Replace:
    """A filter's answer: store these bytes (a DICOM Part 10 file) instead."""

    data: bytes


FilterAnswer = Reject | Replace | None  # None: accept as it is
InstanceFilter = Callable[[Incoming], FilterAnswer]


@dataclass(frozen=True)
class Committed:
    """An instance whose rows have committed: what :meth:`Archive._committed` announces."""

    parsed: ParsedInstance
    origin: str | None
    status: StoreStatus
    new_study: bool
    size: int


STUDY_HOOK_JOB = "archive.study_hook"


class Archive:
    """Store, find, retrieve and delete DICOM instances."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        blobs: BlobStore,
        events: EventBus | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.events = events or EventBus()
        # Typed in-transaction hooks, run when an instance starts a new study (and during a
        # rebuild): see :meth:`_study_hooks`.
        self.study_hooks: list[StudyHook] = []
        # Called before an instance is written: accept, refuse or replace it (plugins).
        self.filters: list[tuple[str, InstanceFilter]] = []
        # The rows of instances stored at the same moment share one transaction.
        self.rows = GroupCommit(db)

    def add_study_hook(self, name: str, run: StudyHookFn) -> None:
        self.study_hooks.append(StudyHook(name, run))

    def add_filter(self, name: str, instance_filter: InstanceFilter) -> None:
        self.filters.append((name, instance_filter))

    def close(self) -> None:
        self.rows.close()

    def _index(
        self, session: Session, parsed: ParsedInstance, blob: BlobInfo, origin: str | None
    ) -> tuple[int, bool]:
        """Index one instance in *session*; its row's id, and whether it started a study."""
        instance_id, new_study = imaging.add_instance(
            session, parsed.json, parsed.transfer_syntax_uid, blob, origin
        )
        if new_study:
            self._study_hooks(session, parsed.json)
        return instance_id, new_study

    def _study_hooks(self, session: Session, data: DicomJson) -> None:
        """Run the study hooks in the instance's transaction, each in a savepoint unless this is
        the group commit's first pass (see :func:`~vesalius.archive.group_commit.first_pass`).

        A hook that fails is rolled back alone, logged, and queued as a job that runs it again
        (``archive.study_hook``): a bug in what is derived from a study never fails the store.
        """
        if not self.study_hooks:
            return
        study = NewStudy(
            (first_string(data, "StudyInstanceUID") or "").strip(),
            (first_string(data, "PatientID") or "").strip() or None,
            data,
        )
        if first_pass(session):
            # A savepoint per hook costs more than the hooks (SQLAlchemy's nested-transaction
            # bookkeeping, 0.6 ms of a 3.6 ms one-image store), and a hook rarely fails: run
            # them bare, and should one fail, have the group commit run the batch again, this
            # time with savepoints (below).
            try:
                for hook in self.study_hooks:
                    hook.run(session, study)
            except OperationalError:
                raise  # a deadlock or a lost connection: the transaction's fate, not the hook's
            except Exception as exc:
                raise RunIsolated(f"study hook {hook.name} failed: {exc}") from exc
            return
        for hook in self.study_hooks:
            try:
                with session.begin_nested():
                    hook.run(session, study)
            except Exception as exc:
                log.exception(
                    "study hook %s failed on study %s; queued to run again",
                    hook.name,
                    study.study_instance_uid,
                )
                jobs.enqueue(
                    session,
                    STUDY_HOOK_JOB,
                    {"hook": hook.name, "data": data, "error": str(exc)[:500]},
                    dedupe_key=f"study_hook:{hook.name}:{study.study_instance_uid}"[:191],
                )

    def run_study_hook(self, name: str, data: DicomJson) -> None:
        """Run one study hook again in its own transaction (the ``archive.study_hook`` job)."""
        hook = next((h for h in self.study_hooks if h.name == name), None)
        if hook is None:
            raise LookupError(f"no study hook named {name!r} in this process")
        study = NewStudy(
            (first_string(data, "StudyInstanceUID") or "").strip(),
            (first_string(data, "PatientID") or "").strip() or None,
            data,
        )
        self.db.run_write(lambda session: hook.run(session, study))

    # -- the two calls every store path makes ---------------------------------------------------

    def _filter(
        self, parsed: ParsedInstance, spool: Spool, origin: str | None
    ) -> tuple[ParsedInstance, Spool]:
        """Run the instance filters before the blob is written; returns what to store.

        Raises ``InstanceRejected`` when a filter refuses the instance (the caller's spool is
        then discarded by its ``with`` block). A filter that raises is logged and skipped. A
        filter that replaces the instance gets a new spool; the old one is discarded.
        """
        for name, instance_filter in self.filters:
            try:
                answer = instance_filter(Incoming(parsed, origin, spool))
            except Exception:
                log.exception(
                    "instance filter %s failed on %s; ignored", name, parsed.sop_instance_uid
                )
                continue
            if isinstance(answer, Reject):
                raise InstanceRejected(f"refused by {name}: {answer.reason}")
            if isinstance(answer, Replace):
                fresh = self.blobs.spool()
                with fresh:
                    write_spool(fresh, answer.data)
                    try:
                        parsed = parse_spool(fresh)
                    except InvalidInstance as exc:
                        raise InvalidInstance(
                            f"{name} changed the instance into one that is not valid: {exc}"
                        ) from exc
                spool.discard()
                spool = fresh
        return parsed, spool

    def _committed(self, committed: Sequence[Committed]) -> None:
        """Announce instances whose rows have committed (events: never before the commit)."""
        if not self.events.wants(InstanceStored, StudyCreated):
            return
        for item in committed:
            parsed = item.parsed
            patient_id = (first_string(parsed.json, "PatientID") or "").strip() or None
            if item.new_study:
                self.events.publish(
                    StudyCreated(parsed.study_instance_uid, patient_id, item.origin)
                )
            self.events.publish(
                InstanceStored(
                    parsed.study_instance_uid,
                    parsed.series_instance_uid,
                    parsed.sop_instance_uid,
                    parsed.sop_class_uid,
                    patient_id,
                    first_string(parsed.json, "Modality"),
                    item.origin,
                    item.size,
                    parsed.transfer_syntax_uid,
                    item.status is StoreStatus.REPLACED,
                    item.new_study,
                    data=parsed.json,
                )
            )

    # -- store ---------------------------------------------------------------------------------

    def store(
        self, data: bytes, origin: str | None = None, *, study_uid: str | None = None
    ) -> StoreOutcome:
        """Archive one DICOM Part 10 file held in memory (see :meth:`store_spool`)."""
        spool = self.blobs.spool()
        with spool:
            write_spool(spool, data)
        return self.store_spool(spool, origin, study_uid=study_uid)

    def store_spool(
        self, spool: Spool, origin: str | None = None, *, study_uid: str | None = None
    ) -> StoreOutcome:
        """Archive the DICOM Part 10 file written into *spool*, as received.

        Three steps: parse (up to the pixel data), write the blob (the spool renamed into
        place, fsync'd), index the rows. The spool is consumed in every case: stored, found a
        duplicate or refused, no temporary file is left. With *study_uid*, the instance must
        belong to that study (STOW-RS to a study URL).

        Raises
        ------
        InvalidInstance
            When the file cannot be archived; nothing is written. ``StudyMismatch`` when it
            belongs to another study than *study_uid*, ``SeriesConflict`` when its series is
            archived under another study.
        """
        return run_steps(self.store_steps(spool, origin, study_uid=study_uid))

    def store_steps(
        self,
        spool: Spool,
        origin: str | None = None,
        study_uid: str | None = None,
        flush_early: bool = False,
    ) -> Steps[StoreOutcome]:
        """:meth:`store_spool` as :data:`~vesalius.archive.inline.Steps`: it yields the
        re-encoding to ``storage_transfer_syntax`` and the blob's flush to the disk, which a
        caller on an event loop runs on a thread while the loop serves its other clients.

        *flush_early*: start flushing the data before the parse (:meth:`Spool.flush`), not
        after it. That shortens the wait of a sender whose rate the wait bounds (one
        association on the loop: +12% instances/s), and costs a second hand-off to a thread
        (0.1-0.15 ms of CPU) that a loop busy with several senders spends better on them.
        """
        if self.settings.storage_transfer_syntax is not None:
            spool = yield functools.partial(self._in_storage_syntax, spool)
        if flush_early:  # nothing waits for it: the spool's lock keeps its file open until
            yield Background(spool.flush)  # the flush has ended; the sync waits for it too
        with spool:
            parsed = parse_spool(spool)
            if self.filters:
                parsed, spool = self._filter(parsed, spool, origin)
        with spool:
            if study_uid is not None and parsed.study_instance_uid != study_uid:
                raise StudyMismatch(
                    f"the instance belongs to study {parsed.study_instance_uid}, "
                    f"not to {study_uid} named in the request",
                    parsed.uids,
                )
            placed = self.blobs.place_spool(spool, blob_key_for(parsed))
        if self.db.log is not None:  # commits reach the disk later: see _index_while_flushing
            return (yield from self._index_while_flushing(parsed, placed, origin))
        try:
            blob = yield placed.sync
        finally:
            placed.abandon()  # a store given up before its flush leaves no file
        return (yield from self._index_new(parsed, blob, origin, retry=True))

    def _index_while_flushing(
        self, parsed: ParsedInstance, placed: PlacedBlob, origin: str | None
    ) -> Steps[StoreOutcome]:
        """Commit a new instance's rows while its file is flushed to the disk, not after.

        Only where a commit reaches the disk later than it returns (the embedded index's log,
        flushed in the background: :mod:`vesalius.index.durability`). Over one association
        the commit then costs no time of its own (+16% instances/s on the development
        machine, 7 of 8 interleaved rounds). Nothing is acknowledged before both have ended,
        and the order on the disk stays safe: a file that fails to flush takes its rows with
        it, and should a power cut keep the rows of a file that did not reach the disk,
        start-up removes them (:meth:`recover_unflushed`); the sender, never answered, sends
        it again.

        A commit that fails waits for the flush: a re-send is then decided as on the ordinary
        path (:meth:`_index_taken`), and any other failure (a series conflict) removes the
        file.
        """
        written = placed.info()
        flush = yield Background(placed.sync)
        try:
            instance_id, new_study = yield Commit(
                self.rows, lambda session: self._index(session, parsed, written, origin)
            )
        except BaseException as exc:
            try:
                blob = yield flush
            finally:
                placed.abandon()
            if isinstance(exc, IntegrityError):
                return self._index_taken(parsed, blob, origin, True, exc)
            self._discard(blob.key)
            raise
        try:
            blob = yield flush
        except BaseException:
            if not flush.succeeded:  # the file is gone: so must its rows be
                placed.abandon()
                self._drop_rows([instance_id], parsed.sop_instance_uid)
            raise
        self._committed([Committed(parsed, origin, StoreStatus.STORED, new_study, blob.size)])
        return self._outcome(StoreStatus.STORED, parsed)

    def _drop_rows(self, instance_ids: list[int], what: str) -> None:
        """Remove rows whose file never reached the disk (nobody was told they were stored)."""
        try:
            with self.db.write() as session:
                imaging.delete_instances(session, instance_ids)
        except Exception:
            log.exception(
                "could not remove the rows of instance %s, whose file was not written; "
                "delete the instance to remove them",
                what,
            )

    def _in_storage_syntax(self, spool: Spool) -> Spool:
        """The spool re-encoded in ``storage_transfer_syntax`` (a new spool when it changed).

        Re-encoding decodes the image, so this one step holds the instance in memory.
        """
        with spool:
            data = spool.path.read_bytes()
        recoded = for_storage(data, self.settings.storage_transfer_syntax)
        if recoded is data:
            return spool
        spool.discard()
        fresh = self.blobs.spool()
        with fresh:
            fresh.write(recoded)
        return fresh

    def _index_new(
        self, parsed: ParsedInstance, blob: BlobInfo, origin: str | None, retry: bool
    ) -> Steps[StoreOutcome]:
        """Index a written blob; on any failure the blob is removed (or kept by a duplicate)."""
        # The unique SOP Instance UID catches re-sends: the common case (a new instance) then
        # costs one blob write and one transaction.
        try:
            _, new_study = yield Commit(
                self.rows, lambda session: self._index(session, parsed, blob, origin)
            )
        except IntegrityError as exc:
            return self._index_taken(parsed, blob, origin, retry, exc)
        except BaseException:
            self._discard(blob.key)
            raise
        self._committed([Committed(parsed, origin, StoreStatus.STORED, new_study, blob.size)])
        return self._outcome(StoreStatus.STORED, parsed)

    def _index_taken(
        self,
        parsed: ParsedInstance,
        blob: BlobInfo,
        origin: str | None,
        retry: bool,
        error: IntegrityError,
    ) -> StoreOutcome:
        """The SOP Instance UID was indexed already (*error*): a re-send, kept or replacing
        the first (:meth:`_store_existing`), or a row deleted meanwhile: indexed again once
        when *retry*, else *error* is raised. The written blob is removed unless it is kept."""
        try:
            with self.db.read() as session:
                existing = imaging.get_instance(session, parsed.sop_instance_uid)
        except BaseException:
            self._discard(blob.key)
            raise
        if existing is not None:
            return self._store_existing(parsed, blob, existing, origin)
        if not retry:
            self._discard(blob.key)
            raise error
        return run_steps(self._index_new(parsed, blob, origin, retry=False))  # deleted meanwhile

    def _store_existing(
        self, parsed: ParsedInstance, blob: BlobInfo, existing: InstanceRecord, origin: str | None
    ) -> StoreOutcome:
        """A re-sent SOP Instance UID: the new blob is written; keep it or remove it."""
        if existing.blob_key == blob.key:  # indexed meanwhile by `doctor --repair`
            return self._outcome(StoreStatus.DUPLICATE, parsed)
        if digests.same_content(
            existing.digest, blob.digest, lambda: self.blobs.open(existing.blob_key)
        ):
            self._discard(blob.key)
            return self._outcome(StoreStatus.DUPLICATE, parsed)
        if self.settings.duplicate_policy is DuplicatePolicy.KEEP_FIRST:
            self._discard(blob.key)
            log.info(
                "instance %s re-sent with other content by %s; kept the first one",
                parsed.sop_instance_uid,
                origin,
            )
            return self._outcome(StoreStatus.KEPT_FIRST, parsed)
        try:
            with self.db.write() as session:
                imaging.replace_instance(
                    session, existing, parsed.json, parsed.transfer_syntax_uid, blob, origin
                )
        except BaseException:
            self._discard(blob.key)
            raise
        self._discard(existing.blob_key)
        self._committed([Committed(parsed, origin, StoreStatus.REPLACED, False, blob.size)])
        return self._outcome(StoreStatus.REPLACED, parsed)

    def _discard(self, key: str) -> None:
        try:
            self.blobs.delete(key)
        except OSError:
            log.exception("could not remove blob %s; `vesalius doctor` will list it", key)

    @staticmethod
    def _outcome(status: StoreStatus, parsed: ParsedInstance) -> StoreOutcome:
        return StoreOutcome(
            status,
            parsed.sop_class_uid,
            parsed.sop_instance_uid,
            parsed.study_instance_uid,
            parsed.series_instance_uid,
        )

    # -- find ----------------------------------------------------------------------------------

    def find(self, query: Query) -> list[DicomJson]:
        """Entities matching *query*, as DICOM JSON (see :mod:`vesalius.archive.query`)."""
        with self.db.read() as session:
            return run_query(session, query, fold_pn=self.settings.case_insensitive_pn)

    # -- retrieve ------------------------------------------------------------------------------

    def instances_for(self, level: Level, constraints: list[Constraint]) -> list[InstanceRecord]:
        """The instances a C-GET or C-MOVE identifier selects: exactly those under the entities
        the same identifier finds with C-FIND."""
        return self.select(Query(level=level, constraints=list(constraints)))

    def select(self, query: Query) -> list[InstanceRecord]:
        """The instances under every entity *query* finds (the one lookup of find, retrieve
        and delete; see :func:`vesalius.archive.query.select_instances`)."""
        with self.db.read() as session:
            return select_instances(session, query, fold_pn=self.settings.case_insensitive_pn)

    def instances_of(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[InstanceRecord]:
        """The instances of a study, series or instance; raises NotFound when there are none."""
        records = self.select(uid_query(study_uid, series_uid, sop_uid))
        if not records:
            what = sop_uid or series_uid or study_uid
            raise NotFound(f"no instance found for {what}")
        return records

    def commitment(
        self, references: Sequence[tuple[str, str]]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Which of the (SOP Class UID, SOP Instance UID) pairs are safely archived.

        Returns (present, missing), each in the order given. An instance is present when its
        rows have committed under the same SOP Class; the storage commitment SCP (PS3.4 J)
        answers from this, and nothing else decides it. (With the embedded index, rows commit
        while the file is flushed: an instance still in flight, not yet acknowledged to its
        sender, may be reported present a few milliseconds before its file is durable.)
        """
        with self.db.read() as session:
            found = imaging.instances_by_uid(session, [uid for _, uid in references])
        present: list[tuple[str, str]] = []
        missing: list[tuple[str, str]] = []
        for sop_class, sop_uid in references:
            row = found.get(sop_uid)
            (present if row is not None and row[0] == sop_class else missing).append(
                (sop_class, sop_uid)
            )
        return present, missing

    def studies_of(self, sop_uids: Sequence[str]) -> set[str]:
        """The Study Instance UIDs of the indexed instances among *sop_uids*."""
        with self.db.read() as session:
            found = imaging.instances_by_uid(session, sop_uids)
        return {study for _, study in found.values()}

    def declare_complete(self, study_uids: Iterable[str]) -> list[str]:
        """Declare stable now the studies that said they are complete (a storage commitment
        with every instance present, or as many instances as they announced), before
        ``stable_after_s``: a ``study_stable`` change and a ``StudyStable`` event (reason
        "complete") for each one not stable yet. Returns the studies declared."""
        uids = sorted(set(study_uids))
        settled = self.db.run_write(lambda s: imaging.settle_named_studies(s, uids))
        for study in settled:
            self.events.publish(
                StudyStable(
                    study.study_instance_uid,
                    study.patient_id or None,
                    study.num_instances,
                    reason="complete",
                )
            )
        return [s.study_instance_uid for s in settled]

    def open(self, record: InstanceRecord) -> BinaryIO:
        """The stored file of an instance, exactly as it was received."""
        return self.blobs.open(record.blob_key)

    def prefetch(self, record: InstanceRecord) -> None:
        """Start reading an instance's file that is about to be sent (a hint, never fails)."""
        self.blobs.prefetch(record.blob_key)

    # -- delete --------------------------------------------------------------------------------

    def delete(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> int:
        """Delete a study, series or instance (rows, then files); returns instances removed."""
        records = self.instances_of(study_uid, series_uid, sop_uid)
        with self.db.write() as session:
            imaging.delete_instances(session, [r.id for r in records])
        for record in records:
            self._discard(record.blob_key)
        self.events.publish(InstancesDeleted(study_uid, series_uid, sop_uid, len(records)))
        return len(records)

    # -- rebuild -------------------------------------------------------------------------------

    def reindex(
        self, progress: Callable[[int, int], None] | None = None
    ) -> tuple[int, list[tuple[str, str]]]:
        """Rebuild the whole imaging index from the stored files alone.

        Returns the number of instances indexed and the (key, reason) of files left out.
        """
        keys = [k for k in self.blobs.iter_keys() if k.startswith(DICOM_PREFIX)]
        rejected: list[tuple[str, str]] = []
        indexed = 0
        with self.db.write() as session:
            imaging.clear(session)
            for number, key in enumerate(keys, 1):
                try:
                    parsed, blob = self._read_stored(key)
                    with session.begin_nested():
                        self._index(session, parsed, blob, "reindex")
                    indexed += 1
                except InvalidInstance as exc:
                    rejected.append((key, str(exc)))
                except IntegrityError:
                    rejected.append((key, "another file holds the same SOP Instance UID"))
                if progress is not None:
                    progress(number, len(keys))
            imaging.mark_all_stable(session)
        return indexed, rejected

    def totals(self) -> imaging.Totals:
        with self.db.read() as session:
            return imaging.totals(session)

    def _read_stored(self, key: str) -> tuple[ParsedInstance, BlobInfo]:
        """Parse a stored file (up to its pixel data) and hash it whole, a chunk at a time."""
        with self.blobs.open(key) as fh:
            digest = digests.of_stream(digests.ALGORITHM, fh)
            size = fh.tell()
            path = self.blobs.local_path(key)
            if path is not None:
                parsed = parse_file(path, size)
            else:
                fh.seek(0)
                parsed = parse_instance(fh.read())
        return parsed, BlobInfo(key, size, digest)

    def iter_orphans(self, min_age: float = 0.0) -> Iterator[str]:
        """Stored DICOM files the index does not reference.

        A store in progress has written its file but not yet committed its rows: with
        *min_age* (seconds), files modified more recently than that are left out.
        """
        with self.db.read() as session:
            known = imaging.all_blob_keys(session)
        now = time.time()
        for key in self.blobs.iter_keys():
            if key.startswith(DICOM_PREFIX) and key not in known:
                if min_age > 0 and now - self.blob_mtime(key) < min_age:
                    continue
                yield key

    def recover_unflushed(self, since: float, margin: float = RECOVERY_MARGIN_S) -> list[str]:
        """Index the stored files a power cut may have left without their rows, after removing
        the rows it may have left without their file (:meth:`_drop_unwritten`).

        *since* is when the index log was last flushed (:mod:`vesalius.index.durability`);
        every file stored from *margin* seconds before it is checked, through the hour folders
        of its key. Files whose SOP Instance UID is indexed with them are skipped; the others
        are indexed, or removed when they cannot be (:meth:`repair_orphan`). Returns the keys
        indexed again.
        """
        start = since - margin
        self._drop_unwritten(start)
        recovered: list[str] = []
        hour = start - start % 3600
        while hour <= time.time():
            for key in self.blobs.iter_keys(hour_prefix(hour)):
                if self.blob_changed(key) < start or self._indexed_with(key):
                    continue
                reason = self.repair_orphan(key)
                if reason is None:
                    recovered.append(key)
                else:
                    log.warning("a file stored before a crash was removed: %s (%s)", key, reason)
            hour += 3600
        return recovered

    def _drop_unwritten(self, start: float) -> None:
        """Remove the rows indexed since *start* whose file is missing or short.

        Rows commit while their file is flushed (:meth:`_index_while_flushing`), so a power
        cut may keep the rows of a file that never reached the disk; its sender was never
        answered. Filesystems that order data before metadata (ext4, XFS) never show a
        longer file than was written, so the size tells; a short file is removed too.
        """
        since = datetime.fromtimestamp(start, UTC).replace(tzinfo=None)
        with self.db.read() as session:
            rows = imaging.instances_since(session, since)
        sizes = [(row, self._stored_size(row.blob_key)) for row in rows]
        gone = [(row, size) for row, size in sizes if size not in (None, row.size)]
        if not gone:
            return
        self._drop_rows([row.id for row, _ in gone], ", ".join(r.sop_instance_uid for r, _ in gone))
        for row, size in gone:
            if size != -1:
                self._discard(row.blob_key)  # short: not to be indexed again as an orphan
        log.warning(
            "removed the rows of %d instance(s) whose file did not reach the disk before "
            "the last stop (a power cut?); their senders were not answered and send again",
            len(gone),
        )

    def _stored_size(self, key: str) -> int | None:
        """The size of a stored file on the disk (-1 when missing), None when unknown here."""
        path = self.blobs.local_path(key)
        if path is None:
            return None
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return -1

    def _indexed_with(self, key: str) -> bool:
        sop_uid = key.rsplit("/", 1)[-1].rsplit(".", 2)[0]
        with self.db.read() as session:
            existing = imaging.get_instance(session, sop_uid)
        return existing is not None and existing.blob_key == key

    def blob_changed(self, key: str) -> float:
        """When a stored file was put in place (its inode's change time; now if unknown)."""
        path = self.blobs.local_path(key)
        try:
            return path.stat().st_ctime if path is not None else time.time()
        except FileNotFoundError:
            return 0.0

    def blob_mtime(self, key: str) -> float:
        """When a stored file was last modified (0 when the store cannot say; now if gone)."""
        path = self.blobs.local_path(key)
        try:
            return path.stat().st_mtime if path is not None else 0.0
        except FileNotFoundError:
            return time.time()

    def repair_orphan(self, key: str) -> str | None:
        """Index an orphan file if it can be, otherwise remove it.

        Returns ``None`` when the file was indexed (it parses, and its SOP Instance UID is
        not indexed with another file), or the reason it was removed.
        """
        try:
            parsed, blob = self._read_stored(key)
        except FileNotFoundError:
            return "gone meanwhile"
        except InvalidInstance as exc:
            self._discard(key)
            return f"not indexable: {exc}"
        try:
            self.db.run_write(lambda session: self._index(session, parsed, blob, "doctor"))
        except IntegrityError:
            self._discard(key)
            return "its SOP Instance UID is indexed with another file"
        except InvalidInstance as exc:
            self._discard(key)
            return f"not indexable: {exc}"
        return None


def _replay_study_hook(payload: dict[str, Any], context: jobs.JobContext) -> None:
    context.container.archive.run_study_hook(payload["hook"], payload["data"])


jobs.register(STUDY_HOOK_JOB, _replay_study_hook, max_attempts=10)
