"""STOW-RS (PS3.18 10.5): storing instances sent as ``multipart/related``.

The body is parsed as it arrives and each part is written to a spool on disk as its bytes come
in (never gathered in memory); a complete part is handed to the archive (``store_spool``, the
path C-STORE and ``vesalius import`` take) while the next is read, a few at a time. Limits per
part and per request (``stow_max_part_bytes``, ``stow_max_request_bytes``) answer 413. The
answer is the PS3.18 store response: what was stored (ReferencedSOPSequence), what was not
and why (FailedSOPSequence with a FailureReason), and HTTP 200, 202 or 409 accordingly.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response

from vesalius.archive import inline as inline_work
from vesalius.archive.inline import Steps, TurnOffload, run_steps
from vesalius.archive.parse import Part10Writer, write_spool
from vesalius.archive.service import Archive, StoreStatus
from vesalius.config import Settings
from vesalius.dicom.dicomjson import element
from vesalius.errors import InvalidInstance, UidConflict
from vesalius.storage.spool import Spool
from vesalius.web.dicomweb import formatter, media
from vesalius.web.dicomweb.common import (
    DICOMWEB_TAG,
    archive_of,
    dicomweb_url,
    json_response,
    problem,
)
from vesalius.web.dicomweb.multipart import (
    Event,
    MultipartError,
    MultipartReader,
    Part,
    PartData,
    PartStart,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=[DICOMWEB_TAG])

# Failure and warning reasons (PS3.18 Table 10.5.3-2 / PS3.4 Annex B).
PROCESSING_FAILURE = 0x0110
DOES_NOT_MATCH_SOP_CLASS = 0xA900  # also: the study differs from the request's
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
ELEMENTS_DISCARDED = 0xB006

# Parts of one request stored concurrently: the blob writes and fsyncs of one overlap the
# next's parsing, and the parts ready together share one group commit. Small parts are cheap
# to hold and gain most from sharing a commit and a flush thread, so more of them may be in
# flight. With 25 one-image studies to a request (one client each of 4): 16 rather than 4
# took 333 to 459 instances/s on pool threads; on the loop, with commits and flushes grouped
# per turn, 32 rather than 16 gained 17% more (6 of 6 interleaved rounds, 0.13 ms less CPU
# per instance) and 64 no more than 32. Of 512 KB parts (4 clients, 25 to a request), 16 in
# flight rather than 4 gained 4.6% and 7.3% (5 of 8 and 6 of 8 interleaved rounds): with 4,
# the fifth part to arrive stopped the body's reading until the first was committed. 32
# gained no more than 16.
IN_FLIGHT = 32
LARGE_IN_FLIGHT = 16  # of which parts of LARGE_MIN bytes or more
LARGE_MIN = 256 * 1024  # bytes

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every instance stored", "content": {"application/dicom+json": {}}},
    202: {"description": "Some stored, or stored with warnings"},
    400: {"description": "The body is not a readable multipart message"},
    409: {"description": "No instance stored; FailedSOPSequence says why"},
    413: {"description": "The request, or one part, is larger than the configured limit"},
    415: {"description": 'Not multipart/related; type="application/dicom"'},
}


# The flushes of the parts stored on the loop (as many threads as anyio's pool has, which
# Starlette's run_in_threadpool uses): those of one turn of it in groups of up to 4 per
# thread. With 4 clients posting 25 one-image studies per request, a hand-off per
# part cost 0.15-0.25 ms of CPU per instance more: +15% instances/s in groups of 4 (5 of 5
# interleaved rounds; all in one group on one thread +10%, groups of 8 +11%).
_FLUSHES = TurnOffload(ThreadPoolExecutor(max_workers=40, thread_name_prefix="stow"), group=4)


@dataclass
class Outcome:
    """What happened to one part."""

    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    failure: int | None = None
    warning: int | None = None
    reason: str = ""


@dataclass
class StowResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def status_code(self) -> int:
        failed = sum(1 for o in self.outcomes if o.failure is not None)
        warned = any(o.warning is not None for o in self.outcomes)
        if self.outcomes and failed == len(self.outcomes):
            return 409
        return 202 if failed or warned else 200


def refuse_part_type(content_type: str) -> Outcome | None:
    """The failure of a part that is not ``application/dicom``, or None when it is."""
    part_type, _ = media.parse_content_type(content_type or "application/dicom")
    if part_type in ("application/dicom", ""):
        return None
    return Outcome(
        failure=SOP_CLASS_NOT_SUPPORTED,
        reason=f"part of type {part_type!r}: only application/dicom is accepted",
    )


def store_spooled(archive: Archive, spool: Spool, study_uid: str | None, origin: str) -> Outcome:
    """Check and store one received part; never raises for a bad part. Consumes *spool*."""
    return run_steps(stored_part(archive, spool, study_uid, origin))


def stored_part(
    archive: Archive, spool: Spool, study_uid: str | None, origin: str
) -> Steps[Outcome]:
    """:func:`store_spooled` as :data:`~vesalius.archive.inline.Steps` (``store_steps``)."""
    try:
        outcome = yield from archive.store_steps(spool, origin, study_uid)
    except UidConflict as exc:  # the request names another study, or the series does
        return Outcome(*exc.uids, failure=DOES_NOT_MATCH_SOP_CLASS, reason=str(exc))
    except InvalidInstance as exc:
        return Outcome(failure=CANNOT_UNDERSTAND, reason=str(exc))
    except Exception as exc:  # storage failures: the archive has already cleaned up
        log.exception("STOW-RS: storing a part failed")
        return Outcome(failure=PROCESSING_FAILURE, reason=f"the archive could not store it: {exc}")
    finally:
        spool.discard()  # a no-op once stored
    result = Outcome(
        outcome.sop_class_uid,
        outcome.sop_instance_uid,
        outcome.study_instance_uid,
        outcome.series_instance_uid,
    )
    if outcome.status is StoreStatus.KEPT_FIRST:
        result.warning = ELEMENTS_DISCARDED
        result.reason = "another instance with this SOP Instance UID was archived first; kept"
    return result


def store_part(archive: Archive, part: Part, study_uid: str | None, origin: str) -> Outcome:
    """Check and store one part held in memory (STOW of JSON builds such parts)."""
    refused = refuse_part_type(part.content_type)
    if refused is not None:
        return refused
    spool = archive.blobs.spool()
    try:
        write_spool(spool, part.body)
    except BaseException:
        spool.discard()
        raise
    return store_spooled(archive, spool, study_uid, origin)


class TooLarge(Exception):
    """The request or one of its parts passed its limit (413)."""


class PartSpooler:
    """Writes each part of a STOW-RS body into a spool as it arrives and stores it at its end.

    Up to ``IN_FLIGHT`` complete parts (``LARGE_IN_FLIGHT`` large ones) are stored
    concurrently while the body is still read (see :meth:`_store`). Whatever happens, no spool
    outlives the request: :meth:`abort` discards the part being received, and every stored
    part's spool is consumed by the archive.
    """

    def __init__(
        self, archive: Archive, settings: Settings, study_uid: str | None, origin: str
    ) -> None:
        self.archive = archive
        self.study_uid = study_uid
        self.origin = origin
        self.max_part = settings.stow_max_part_bytes
        self.max_request = settings.stow_max_request_bytes
        self.received = 0
        self.tasks: list[asyncio.Future[Outcome]] = []
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._large_slots = asyncio.Semaphore(LARGE_IN_FLIGHT)
        self._writer: Part10Writer | None = None
        self._refused: Outcome | None = None
        self._part_bytes = 0

    async def handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, PartData):
                self._data(event.data)
            elif isinstance(event, PartStart):
                self._start(event)
            else:
                await self._end()

    def count(self, size: int) -> None:
        """Count body bytes against the request limit."""
        self.received += size
        if self.received > self.max_request:
            raise TooLarge(
                f"the request is larger than the {self.max_request} bytes accepted in one "
                "STOW-RS request (stow_max_request_bytes): send fewer instances per request"
            )

    def _start(self, event: PartStart) -> None:
        self.abort()
        self._part_bytes = 0
        self._refused = refuse_part_type(event.content_type)
        if self._refused is None:
            self._writer = Part10Writer(self.archive.blobs.spool())

    def _data(self, data: bytes) -> None:
        if self._writer is None:
            return  # a refused part: its bytes are read and dropped
        self._part_bytes += len(data)
        if self._part_bytes > self.max_part:
            raise TooLarge(
                f"part {len(self.tasks) + 1} is larger than the {self.max_part} bytes accepted "
                "for one instance (stow_max_part_bytes)"
            )
        self._writer.write(data)

    async def _end(self) -> None:
        writer, self._writer = self._writer, None
        refused, self._refused = self._refused, None
        if writer is None:
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            future.set_result(refused or Outcome(failure=CANNOT_UNDERSTAND, reason="empty part"))
            self.tasks.append(future)
            return
        try:
            writer.close()
        except BaseException:
            writer.spool.discard()
            raise
        large = writer.spool.size >= LARGE_MIN
        try:
            await self._admit(large)
        except BaseException:  # the request was cancelled while waiting for a slot
            writer.spool.discard()
            raise
        self.tasks.append(asyncio.ensure_future(self._store(writer.spool, large)))

    async def _admit(self, large: bool) -> None:
        """Wait until one more part, *large* or not, may be stored."""
        await self._slots.acquire()
        if large:
            try:
                await self._large_slots.acquire()
            except BaseException:
                self._slots.release()
                raise

    async def _store(self, spool: Spool, large: bool) -> Outcome:
        """Store a part on the loop, its flush to the disk on a thread meanwhile.

        Its rows are committed with those of every part (of any request) that reached its
        commit in the same turn of the loop (``LoopWork.commits``), and its flush runs with
        those of that turn, a few to a thread (:data:`_FLUSHES`). The store goes on if the
        request is cancelled (see :meth:`outcomes`): the spool is always consumed.

        Measured with 4 clients sending 25 parts per request: series of 512 KB parts went
        from 305 to 346 instances/s on the loop, and to 557 with the flush on a thread. Small
        one-image parts, on the pool so that up to ``IN_FLIGHT`` of a request shared a
        commit (on the loop each committed alone: 457 down to 383), gained 18% more on the
        loop with their commits batched per turn (median of 5 interleaved rounds, 5 won,
        0.18 ms less CPU per instance): up to 40 pool threads had passed the GIL between them.
        Large parts went the same way later: through ``LoopWork.run_split`` each had committed
        alone and handed each flush to a thread of its own. With commits and flushes grouped
        per turn, 512 KB parts took 1.81-1.97 ms of CPU per instance instead of 2.04-2.06,
        and 1.02x and 1.05x the instances/s (5 of 8 and 6 of 8 interleaved rounds).
        """
        try:
            return await inline_work.await_steps(
                stored_part(self.archive, spool, self.study_uid, self.origin),
                _FLUSHES,
                inline_work.of_running_loop().commits,
            )
        finally:
            self._slots.release()
            if large:
                self._large_slots.release()

    def abort(self) -> None:
        """Discard the part being received (the body broke off or passed a limit)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.spool.discard()

    async def outcomes(self) -> list[Outcome]:
        """Each part's outcome; a cancelled caller leaves the stores to go on to their end."""
        return list(await asyncio.gather(*(asyncio.shield(task) for task in self.tasks)))


def response_body(result: StowResult, base: str, study_uid: str | None) -> dict[str, Any]:
    """The store response dataset as DICOM JSON (PS3.18 Table 10.5.3-1)."""
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for o in result.outcomes:
        item: dict[str, Any] = {}
        if o.sop_class_uid:
            item["00081150"] = element("ReferencedSOPClassUID", [o.sop_class_uid])
        if o.sop_instance_uid:
            item["00081155"] = element("ReferencedSOPInstanceUID", [o.sop_instance_uid])
        if o.failure is not None:
            item["00081197"] = element("FailureReason", [o.failure])
            if o.reason:
                item["00741048"] = element("TextValue", [o.reason[:1024]])
            failed.append(dict(sorted(item.items())))
            continue
        item["00081190"] = element(
            "RetrieveURL",
            [
                formatter.retrieve_url(
                    base, o.study_instance_uid, o.series_instance_uid, o.sop_instance_uid
                )
            ],
        )
        if o.warning is not None:
            item["00081196"] = element("WarningReason", [o.warning])
        referenced.append(dict(sorted(item.items())))
    body: dict[str, Any] = {}
    stored_studies = {o.study_instance_uid for o in result.outcomes if o.failure is None}
    if study_uid is not None or len(stored_studies) == 1:
        url_study = study_uid or next(iter(stored_studies))
        body["00081190"] = element("RetrieveURL", [f"{base}/studies/{url_study}"])
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    return body


async def _stow(request: Request, study_uid: str | None) -> Response:
    media_type, params = media.parse_content_type(request.headers.get("content-type", ""))
    if media_type != "multipart/related":
        raise problem(
            415,
            'STOW-RS takes multipart/related; type="application/dicom", not '
            + (repr(media_type) if media_type else "a body without Content-Type"),
        )
    part_type = params.get("type", "application/dicom").lower()
    if part_type == "application/dicom+json":  # metadata and bulk data (PS3.18 10.5.1.2.2)
        from vesalius.web.dicomweb.stow_json import stow_json

        return await stow_json(request, study_uid, params)
    if part_type != "application/dicom":
        raise problem(415, f"parts of type {part_type!r} are not supported: send application/dicom")
    return await _stow_dicom(request, study_uid, params.get("boundary", ""))


async def _stow_dicom(request: Request, study_uid: str | None, boundary: str) -> Response:
    """STOW-RS of ``application/dicom`` parts, each streamed to a spool."""
    archive = archive_of(request)
    settings = archive.settings
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.stow_max_request_bytes:
        raise problem(
            413,
            f"the request is {declared} bytes, more than the {settings.stow_max_request_bytes} "
            "accepted in one STOW-RS request (stow_max_request_bytes): send fewer instances "
            "per request",
        )
    try:
        reader = MultipartReader(boundary)
    except MultipartError as exc:
        raise problem(400, str(exc)) from None
    client = request.client
    spooler = PartSpooler(archive, settings, study_uid, f"stow:{client.host if client else '?'}")
    broken: str | None = None
    too_large: str | None = None
    try:
        async for chunk in request.stream():
            spooler.count(len(chunk))
            await spooler.handle(reader.events(chunk))
    except MultipartError as exc:
        broken = str(exc)
    except TooLarge as exc:
        too_large = str(exc)
    finally:
        spooler.abort()  # the part being received when the body broke off, if any
        outcomes = await spooler.outcomes()  # also when the client went away
    if too_large is not None:
        stored = sum(1 for o in outcomes if o.failure is None)
        kept = f"; the {stored} instance(s) before it were stored" if stored else ""
        raise problem(413, too_large + kept)
    if broken is None and not reader.finished:
        broken = (
            "the body ended inside a part (no closing boundary)"
            if reader.in_part or reader.parts_seen
            else "the body does not contain the announced boundary"
        )
    if broken is not None:
        if not outcomes and not reader.in_part:
            raise problem(400, f"not a readable multipart body: {broken}")
        outcomes.append(Outcome(failure=CANNOT_UNDERSTAND, reason=broken))
    if not outcomes:
        raise problem(400, "the multipart body holds no part")
    result = StowResult(outcomes)
    base = dicomweb_url(request)
    return json_response(response_body(result, base, study_uid), status_code=result.status_code)


@router.post("/studies", summary="Store instances", responses=_RESPONSES)
async def store_instances(request: Request) -> Response:
    return await _stow(request, None)


@router.post("/studies/{study}", summary="Store instances of one study", responses=_RESPONSES)
async def store_study_instances(request: Request, study: str) -> Response:
    return await _stow(request, study)
