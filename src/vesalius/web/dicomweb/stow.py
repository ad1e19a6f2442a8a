"""STOW-RS (PS3.18 10.5): storing instances sent as ``multipart/related``.

The body is parsed as it arrives; each complete part is handed to the archive (the same
``store`` C-STORE uses) while the next is read, a few at a time. The answer is the PS3.18
store response: what was stored (ReferencedSOPSequence), what was not and why
(FailedSOPSequence with a FailureReason), and HTTP 200, 202 or 409 accordingly.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from vesalius.archive.service import Archive, StoreStatus
from vesalius.dicom.dicomjson import element
from vesalius.errors import InvalidInstance, UidConflict
from vesalius.web.dicomweb import formatter, media
from vesalius.web.dicomweb.common import (
    DICOMWEB_TAG,
    archive_of,
    dicomweb_url,
    json_response,
    problem,
)
from vesalius.web.dicomweb.multipart import MultipartError, MultipartReader, Part

log = logging.getLogger(__name__)

router = APIRouter(tags=[DICOMWEB_TAG])

# Failure and warning reasons (PS3.18 Table 10.5.3-2 / PS3.4 Annex B).
PROCESSING_FAILURE = 0x0110
DOES_NOT_MATCH_SOP_CLASS = 0xA900  # also: the study differs from the request's
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
ELEMENTS_DISCARDED = 0xB006

# Parts stored concurrently: the blob writes and fsyncs of one overlap the next's parsing.
IN_FLIGHT = 4

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every instance stored", "content": {"application/dicom+json": {}}},
    202: {"description": "Some stored, or stored with warnings"},
    400: {"description": "The body is not a readable multipart message"},
    409: {"description": "No instance stored; FailedSOPSequence says why"},
    415: {"description": 'Not multipart/related; type="application/dicom"'},
}


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


def store_part(archive: Archive, part: Part, study_uid: str | None, origin: str) -> Outcome:
    """Check and store one part; never raises for a bad part."""
    part_type, _ = media.parse_content_type(part.content_type or "application/dicom")
    if part_type not in ("application/dicom", ""):
        return Outcome(
            failure=SOP_CLASS_NOT_SUPPORTED,
            reason=f"part of type {part_type!r}: only application/dicom is accepted",
        )
    try:
        outcome = archive.store(part.body, origin=origin, study_uid=study_uid)
    except UidConflict as exc:  # the request names another study, or the series does
        return Outcome(*exc.uids, failure=DOES_NOT_MATCH_SOP_CLASS, reason=str(exc))
    except InvalidInstance as exc:
        return Outcome(failure=CANNOT_UNDERSTAND, reason=str(exc))
    except Exception as exc:  # storage failures: the archive has already cleaned up
        log.exception("STOW-RS: storing a part failed")
        return Outcome(failure=PROCESSING_FAILURE, reason=f"the archive could not store it: {exc}")
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
    try:
        reader = MultipartReader(params.get("boundary", ""))
    except MultipartError as exc:
        raise problem(400, str(exc)) from None
    archive = archive_of(request)
    client = request.client
    origin = f"stow:{client.host if client else 'unknown'}"
    slots = asyncio.Semaphore(IN_FLIGHT)
    tasks: list[asyncio.Task[Outcome]] = []

    async def store(part: Part) -> Outcome:
        try:
            return await run_in_threadpool(store_part, archive, part, study_uid, origin)
        finally:
            slots.release()

    broken: str | None = None
    try:
        async for chunk in request.stream():
            for part in reader.feed(chunk):
                await slots.acquire()
                tasks.append(asyncio.ensure_future(store(part)))
    except MultipartError as exc:
        broken = str(exc)
    outcomes = list(await asyncio.gather(*tasks))
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
