"""The site indexer: pushes this site's study records to the central index (seed 004).

The watermark is a number of the index's change feed (:mod:`vesalius.index.changes`), kept in
the database (``indexer_state``): a push reads the changes after it, turns the studies they
name into records (their metadata now, or a deletion when the study is gone), sends them in
batches, and moves the watermark past them only once the central index has acknowledged every
batch. A restart therefore neither loses nor resends more than one unacknowledged round, and
resending is harmless: the central index upserts by (site, study UID) and skips records older
than what it holds (``seq``).

The initial push (``--initial``) sends every study, then sets the watermark to the change
number read before it started, so changes made during it are sent again by the next push.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from vesalius import __version__
from vesalius.config import Settings
from vesalius.federation.records import StudyRecord
from vesalius.index import federation as fed_index
from vesalius.index.engine import Database
from vesalius.index.federation import PushState

log = logging.getLogger("vesalius.indexer")

LOCAL = "local"
# Changes read per round: many changes name the same study (one per stored instance).
CHANGES_PER_ROUND = 20_000

Progress = Callable[[int, int], None]


class PushFailed(Exception):
    """The central index did not acknowledge a batch; the message says why and what to do."""


class NotConfigured(PushFailed):
    """indexer_url, indexer_key or site_code is missing."""


@dataclass
class PushResult:
    records: int = 0
    batches: int = 0
    upserted: int = 0
    deleted: int = 0
    stale: int = 0
    watermark: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class IndexerStatus:
    state: PushState
    latest_seq: int
    backlog: int  # changes after the watermark
    studies: int  # local studies
    url: str | None
    site_code: str | None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _changes() -> Any:
    """The change feed module (imported late: it belongs to the events part of the index)."""
    from vesalius.index import changes

    return changes


class Indexer:
    """Pushes this site's records to ``indexer_url`` with ``indexer_key`` as ``site_code``."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        retries: int = 5,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.db = db
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- state -------------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        s = self.settings
        return bool(s.indexer_url and s.indexer_key and s.site_code)

    def _require_configuration(self) -> None:
        missing = [
            f"VESALIUS_{name.upper()}"
            for name in ("indexer_url", "indexer_key", "site_code")
            if not getattr(self.settings, name)
        ]
        if missing:
            raise NotConfigured(
                f"set {', '.join(missing)} to push to a central index (the key comes from "
                "`vesalius central site add CODE` on the central index)"
            )

    def status(self, source: str = LOCAL) -> IndexerStatus:
        changes = _changes()
        with self.db.read() as session:
            state = fed_index.push_state(session, source)
            if source == LOCAL:
                latest = changes.latest_seq(session)
                backlog = latest - state.watermark if state.initial_done else latest
                studies = fed_index.local_study_count(session)
            else:  # a remote PACS has no change feed: what it last acknowledged
                latest = backlog = 0
                studies = len(fed_index.remote_digests(session, source))
        return IndexerStatus(
            state,
            latest,
            max(0, backlog),
            studies,
            self.settings.indexer_url,
            self.settings.site_code,
        )

    # -- pushes ------------------------------------------------------------------------------

    def push(self, *, initial: bool = False, progress: Progress | None = None) -> PushResult:
        """The initial push (when asked, or never done yet), else the changes since the last."""
        self._require_configuration()
        with self._lock:  # one push at a time in this process (the job and its schedule)
            with self.db.read() as session:
                state = fed_index.push_state(session, LOCAL)
            if initial or not state.initial_done:
                return self.push_initial(progress)
            return self.push_changes()

    def push_initial(self, progress: Progress | None = None) -> PushResult:
        """Send every study; the watermark then moves to the change number read first."""
        self._require_configuration()
        started = time.monotonic()
        changes = _changes()
        with self.db.read() as session:
            start_seq = changes.latest_seq(session)
            total = fed_index.local_study_count(session)
        result = PushResult(watermark=start_seq)
        after = 0
        size = self.settings.indexer_batch_size
        try:
            while True:
                with self.db.read() as session:
                    records, after = fed_index.local_studies_after(
                        session, after, size, self.settings.site_code, start_seq
                    )
                if not records:
                    break
                self._send_all(records, result)
                if progress is not None:
                    progress(result.records, total)
        except PushFailed as exc:
            self._note_failure(str(exc))
            raise
        self.db.run_write(
            lambda s: fed_index.record_push(
                s,
                LOCAL,
                _now(),
                watermark=start_seq,
                pushed=result.records,
                initial_done=True,
            )
        )
        result.seconds = time.monotonic() - started
        log.info(
            "initial push done: %d studies in %d batches in %.1f s; watermark %d",
            result.records,
            result.batches,
            result.seconds,
            start_seq,
        )
        return result

    def push_changes(self) -> PushResult:
        """Send the studies named by the changes after the watermark, until caught up."""
        self._require_configuration()
        started = time.monotonic()
        changes = _changes()
        with self.db.read() as session:
            state = fed_index.push_state(session, LOCAL)
        result = PushResult(watermark=state.watermark)
        while True:
            with self.db.read() as session:
                batch = changes.changes_since(session, result.watermark, CHANGES_PER_ROUND)
                if not batch:
                    break
                if any(change.kind == "index_reset" for change in batch):
                    # The index was rebuilt from its files: send every study again.
                    log.info("the index was rebuilt (change feed reset): pushing every study")
                    return self.push_initial()
                last_seq = batch[-1].seq
                study_uids = self._studies_named(session, batch)
                records = fed_index.local_records(
                    session, study_uids, self.settings.site_code, last_seq
                )
            try:
                self._send_all(records, result)
            except PushFailed as exc:
                self._note_failure(str(exc))
                raise
            self.db.run_write(
                lambda s, seq=last_seq, n=len(records): fed_index.record_push(
                    s, LOCAL, _now(), watermark=seq, pushed=n
                )
            )
            result.watermark = last_seq
        result.seconds = time.monotonic() - started
        if result.records:
            log.info(
                "push done: %d studies in %d batches in %.2f s; watermark %d",
                result.records,
                result.batches,
                result.seconds,
                result.watermark,
            )
        return result

    @staticmethod
    def _studies_named(session: Any, batch: list[Any]) -> list[str]:
        """The study UIDs a round of changes touches, in order, each once.

        A change naming only a patient (its data changed, or it was deleted) touches every
        study the site still holds for that patient; its deleted studies have changes of
        their own.
        """
        uids: dict[str, None] = {}
        patients: dict[str, None] = {}
        for change in batch:
            if change.study_uid:
                uids[change.study_uid] = None
            elif change.patient_id:
                patients[change.patient_id] = None
        if patients:
            for uid in fed_index.study_uids_of_patients(session, list(patients)):
                uids[uid] = None
        return list(uids)

    # -- a remote PACS as the source ---------------------------------------------------------

    def push_source(self, name: str, progress: Progress | None = None) -> PushResult:
        """List the remote PACS *name* and send what changed there since the last push.

        A remote PACS has no change feed: each push lists all its studies (QIDO-RS) and
        compares each record with the digest of what the central index last acknowledged,
        kept in ``indexer_remote_studies`` (over QIDO-RS, or C-FIND without a dicomweb_url);
        new and changed studies are sent, and deletions
        for studies no longer listed. A listing that fails sends nothing.
        """
        from vesalius.federation.remote import FindSource, QidoSource, RemoteError

        self._require_configuration()
        pacs = self.settings.find_remote_pacs(name)
        if pacs is None:
            known = ", ".join(p.name for p in self.settings.remote_pacs) or "none"
            raise NotConfigured(
                f"no [[remote_pacs]] named {name!r} (configured: {known}); declare it in the "
                "configuration file or VESALIUS_REMOTE_PACS"
            )
        started = time.monotonic()
        source: QidoSource | FindSource = (
            QidoSource(pacs) if pacs.dicomweb_url else FindSource(pacs, self.settings.ae_title)
        )
        try:
            listed = {r.study_iuid: r for r in source.studies(self.settings.site_code)}
        except RemoteError as exc:
            self._note_failure(str(exc), name)
            raise PushFailed(str(exc)) from None
        finally:
            source.close()
        with self.db.read() as session:
            known_digests = fed_index.remote_digests(session, name)
        digests = {uid: record.digest() for uid, record in listed.items()}
        changed = [r for uid, r in listed.items() if known_digests.get(uid) != digests[uid]]
        gone = [uid for uid in known_digests if uid not in listed]
        records = changed + [
            StudyRecord(study_iuid=uid, deleted=True, center=self.settings.site_code)
            for uid in gone
        ]
        result = PushResult()
        size = self.settings.indexer_batch_size
        try:
            for start in range(0, len(records), size):
                self._send_batch(records[start : start + size], result)
                if progress is not None:
                    progress(result.records, len(records))
        except PushFailed as exc:
            self._note_failure(str(exc), name)
            raise
        acknowledged = {r.study_iuid: digests[r.study_iuid] for r in changed}

        def remember(session: Any) -> None:
            fed_index.replace_remote_digests(session, name, acknowledged, gone)
            fed_index.record_push(session, name, _now(), pushed=len(records), initial_done=True)

        self.db.run_write(remember)
        result.seconds = time.monotonic() - started
        log.info(
            "push of remote PACS %s done: %d listed, %d sent in %.1f s",
            name,
            len(listed),
            result.records,
            result.seconds,
        )
        return result

    def _note_failure(self, message: str, source: str = LOCAL) -> None:
        try:
            self.db.run_write(lambda s: fed_index.record_push(s, source, _now(), error=message))
        except Exception:  # the failure to report matters more than its bookkeeping
            log.exception("could not record the push failure")

    # -- the wire ----------------------------------------------------------------------------

    def _send_all(self, records: list[StudyRecord], result: PushResult) -> None:
        size = self.settings.indexer_batch_size
        for start in range(0, len(records), size):
            self._send_batch(records[start : start + size], result)

    def _send_batch(self, records: list[StudyRecord], result: PushResult) -> None:
        started = time.monotonic()
        try:
            answer = self._post([r.as_json() for r in records])
        except BatchRefusedAsTooLarge:
            if len(records) == 1:
                raise PushFailed(
                    f"the central index refuses even one record ({records[0].study_iuid}) as "
                    "too large"
                ) from None
            half = len(records) // 2
            log.warning("the central index found %d records too many; halving", len(records))
            self._send_batch(records[:half], result)
            self._send_batch(records[half:], result)
            return
        result.batches += 1
        result.records += len(records)
        result.upserted += int(answer.get("upserted", 0))
        result.deleted += int(answer.get("deleted", 0))
        result.stale += int(answer.get("stale", 0))
        log.info(
            "pushed %d records to %s: %s upserted, %s deleted, %s stale (%.0f ms)",
            len(records),
            self.settings.indexer_url,
            answer.get("upserted"),
            answer.get("deleted"),
            answer.get("stale"),
            (time.monotonic() - started) * 1000,
        )

    def _post(self, body: list[dict[str, Any]]) -> dict[str, Any]:
        """POST one batch; retries with backoff while the central index is down or busy."""
        url = str(self.settings.indexer_url)
        headers = {
            "Authorization": f"Bearer {self.settings.indexer_key}",
            "User-Agent": f"Vesalius-indexer/{__version__}",
        }
        problem = ""
        for attempt in range(1, self.retries + 2):
            try:
                if self._client is None:
                    self._client = httpx.Client(timeout=60)
                answer = self._client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"cannot reach the central index at {url}: {exc or type(exc).__name__}"
            else:
                if answer.status_code == 200:
                    data = answer.json()
                    return data if isinstance(data, dict) else {}
                detail = _detail(answer)
                if answer.status_code == 413:
                    raise BatchRefusedAsTooLarge(detail)
                if answer.status_code in (401, 403):
                    raise PushFailed(
                        f"the central index refused this site's key ({answer.status_code}: "
                        f"{detail}); ask its administrator for a new key "
                        "(`vesalius central site add CODE`) and set VESALIUS_INDEXER_KEY"
                    )
                if answer.status_code < 500 and answer.status_code != 429:
                    raise PushFailed(
                        f"the central index refused a batch ({answer.status_code}: {detail})"
                    )
                problem = f"the central index answered {answer.status_code}: {detail}"
            if attempt <= self.retries:
                delay = min(60.0, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
                log.warning("%s; trying again in %.1f s", problem, delay)
                self.sleep(delay)
        raise PushFailed(f"{problem} (gave up after {self.retries + 1} attempts)")


class BatchRefusedAsTooLarge(PushFailed):
    pass


def _detail(answer: httpx.Response) -> str:
    try:
        data = answer.json()
    except ValueError:
        return answer.text[:200] or answer.reason_phrase
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:500]
    return str(data)[:200]
