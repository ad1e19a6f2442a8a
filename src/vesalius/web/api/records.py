"""The research records API: ``/api/subjects/...`` and ``/api/heart-models``.

A thin adapter: each route turns the request into one call on
:class:`~vesalius.records.service.Records` and its answer into JSON or a streamed file. Errors
come back as ``{"detail": "..."}`` with 404 (no such subject/event), 409 (already exists),
413 (over a size limit), 422 (refused content: unknown study, unsafe zip, XML entities, ...).

Uploads are limited twice: a request whose declared length is over the limit is refused before
its body is read, and the bytes are counted as they arrive (also without a declared length),
so an oversized upload is never spooled whole.

Authentication comes with the people issue: routes take no user yet, and a router-level
dependency can protect them all at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import (
    APIRouter,
    File,
    Form,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message

from vesalius.errors import Conflict, InvalidInstance, NotFound, VesaliusError
from vesalius.index.records import SubjectFilters
from vesalius.records.errors import InvalidRecord, TooLarge
from vesalius.records.export import export_subject, import_subject
from vesalius.records.schemas import (
    EventIn,
    EventOut,
    EventPatch,
    ImportOut,
    LinkIn,
    SubjectIn,
    SubjectOut,
    SubjectPage,
    SubjectPatch,
)
from vesalius.records.service import Records, StoredBlob, Upload

CHUNK = 1 << 20
LIMIT_KEY = "x-vesalius-body-limit"
# Room for the multipart framing and the small form fields around the file(s).
FORM_OVERHEAD = 1 << 20


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _status_for(exc: VesaliusError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, InvalidRecord | InvalidInstance):
        return 422
    return 400


class _BodyTooLarge(Exception):
    pass


class RecordsRoute(APIRoute):
    """Maps service errors to JSON answers and enforces the body limit a route declares
    (``openapi_extra={LIMIT_KEY: [setting, ...]}``: the sum of those settings)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        settings_names: list[str] = list((self.openapi_extra or {}).get(LIMIT_KEY, []))

        async def handler(request: Request) -> Response:
            why = ""
            if settings_names:
                settings = request.app.state.container.settings
                limit = sum(getattr(settings, n) for n in settings_names) + FORM_OVERHEAD
                why = (
                    f"the request is larger than {limit} bytes, the limit "
                    f"({' + '.join(settings_names)} and room for the form)"
                )
                declared = request.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    return _error(413, why)
                request = _counting(request, limit)
            try:
                return await original(request)
            except VesaliusError as exc:
                return _error(_status_for(exc), str(exc))
            except HTTPException as exc:
                if isinstance(exc.__cause__, _BodyTooLarge):
                    return _error(413, why)
                raise

        return handler


def _counting(request: Request, limit: int) -> Request:
    """The request with a receive channel that stops once more than *limit* bytes arrived."""
    seen = 0
    receive = request.receive

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge
        return message

    return Request(request.scope, limited)


router = APIRouter(tags=["records"], route_class=RecordsRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such subject or event"},
    422: {"description": "Refused content; the detail says why"},
}


def records_of(request: Request) -> Records:
    records: Records = request.app.state.container.records
    return records


def _stream(records: Records, stored: StoredBlob) -> StreamingResponse:
    fh = records.open_blob(stored.key)

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := fh.read(CHUNK):
                yield chunk
        finally:
            fh.close()

    info = stored.info
    return StreamingResponse(
        chunks(),
        media_type=info.media_type,
        headers={
            "Content-Length": str(info.size),
            "ETag": f'"{info.sha256}"',
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(info.filename)}",
        },
    )


def _upload(file: UploadFile) -> Upload:
    return Upload(file.file, file.filename, file.content_type)


# -- subjects -----------------------------------------------------------------------------------


@router.get("/subjects", summary="List subjects, with filters and paging")
def list_subjects(
    request: Request,
    q: Annotated[str | None, Query(description="Part of the subject ID.")] = None,
    cohort: str | None = None,
    sex: str | None = None,
    event_kind: Annotated[
        str | None, Query(description="Only subjects with an event of this kind.")
    ] = None,
    study_instance_uid: Annotated[
        str | None, Query(description="Only subjects linked to this study.")
    ] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> SubjectPage:
    filters = SubjectFilters(q, cohort, sex, event_kind, study_instance_uid)
    return records_of(request).list_subjects(filters, offset, limit)


@router.post(
    "/subjects",
    status_code=201,
    summary="Create a subject",
    responses={409: {"description": "The subject exists"}},
)
def create_subject(request: Request, subject: SubjectIn) -> SubjectOut:
    return records_of(request).create_subject(subject)


@router.post(
    "/subjects/import",
    status_code=201,
    summary="Import a subject exported by GET /api/subjects/{subject_id}/export",
    description=(
        "The zip's DICOM studies are stored into the archive, its files and models into the "
        "blob store, and its record rebuilt. Refused (409) when the subject exists."
    ),
    responses={409: {"description": "The subject exists"}, **_ERRORS},
    openapi_extra={LIMIT_KEY: ["max_subject_import_bytes"]},
)
def import_subject_route(
    request: Request, file: Annotated[UploadFile, File(description="The export zip.")]
) -> ImportOut:
    return import_subject(records_of(request), file.file)


@router.get("/subjects/{subject_id}", summary="A subject", responses=_ERRORS)
def get_subject(request: Request, subject_id: str) -> SubjectOut:
    return records_of(request).get_subject(subject_id)


@router.patch("/subjects/{subject_id}", summary="Change a subject", responses=_ERRORS)
def update_subject(request: Request, subject_id: str, patch: SubjectPatch) -> SubjectOut:
    return records_of(request).update_subject(subject_id, patch)


@router.delete(
    "/subjects/{subject_id}",
    status_code=204,
    summary="Delete a subject's record (its DICOM studies stay in the archive)",
    responses=_ERRORS,
)
def delete_subject(request: Request, subject_id: str) -> Response:
    records_of(request).delete_subject(subject_id)
    return Response(status_code=204)


@router.get(
    "/subjects/{subject_id}/export",
    summary="The subject as one zip: DICOM studies, files, models and a JSON manifest",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, **_ERRORS},
)
def export(request: Request, subject_id: str) -> StreamingResponse:
    records = records_of(request)
    records.get_subject(subject_id)  # a 404 before the response starts
    spool = export_subject(records, subject_id)

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := spool.read(CHUNK):
                yield chunk
        finally:
            spool.close()

    return StreamingResponse(
        chunks(),
        media_type="application/zip",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(subject_id)}.zip"},
    )


# -- the timeline -------------------------------------------------------------------------------


@router.get(
    "/subjects/{subject_id}/timeline",
    summary="The subject's events in order (date, then position), with prev/next ids",
    responses=_ERRORS,
)
def timeline(
    request: Request,
    subject_id: str,
    kind: Annotated[str | None, Query(description="Only events of this kind.")] = None,
) -> list[EventOut]:
    return records_of(request).timeline(subject_id, kind)


@router.post(
    "/subjects/{subject_id}/events",
    status_code=201,
    summary="Add an event: clinical note, baseline diagnosis, imaging session or a site's kind",
    responses=_ERRORS,
)
def add_event(request: Request, subject_id: str, event: EventIn) -> EventOut:
    return records_of(request).add_event(subject_id, event)


@router.get("/subjects/{subject_id}/events/{event_id}", summary="An event", responses=_ERRORS)
def get_event(request: Request, subject_id: str, event_id: int) -> EventOut:
    return records_of(request).get_event(subject_id, event_id)


@router.patch(
    "/subjects/{subject_id}/events/{event_id}",
    summary="Change an event; a new date or position moves it in the timeline",
    responses=_ERRORS,
)
def update_event(request: Request, subject_id: str, event_id: int, patch: EventPatch) -> EventOut:
    return records_of(request).update_event(subject_id, event_id, patch)


@router.delete(
    "/subjects/{subject_id}/events/{event_id}",
    status_code=204,
    summary="Remove an event (and its file or model)",
    responses=_ERRORS,
)
def delete_event(request: Request, subject_id: str, event_id: int) -> Response:
    records_of(request).delete_event(subject_id, event_id)
    return Response(status_code=204)


@router.post(
    "/subjects/{subject_id}/events/{event_id}/links",
    summary="Link an event to a study of the archive",
    description="An unknown study is refused (422) unless allow_pending is set.",
    responses=_ERRORS,
)
def add_link(request: Request, subject_id: str, event_id: int, link: LinkIn) -> EventOut:
    return records_of(request).add_link(subject_id, event_id, link)


@router.delete(
    "/subjects/{subject_id}/events/{event_id}/links/{study_instance_uid}",
    summary="Remove a study link",
    responses=_ERRORS,
)
def remove_link(
    request: Request, subject_id: str, event_id: int, study_instance_uid: str
) -> EventOut:
    return records_of(request).remove_link(subject_id, event_id, study_instance_uid)


# -- files and models ---------------------------------------------------------------------------


@router.post(
    "/subjects/{subject_id}/files",
    status_code=201,
    summary="Upload an auxiliary file (PDF, echo export, ...) as a new event",
    responses={413: {"description": "Over max_aux_file_bytes"}, **_ERRORS},
    openapi_extra={LIMIT_KEY: ["max_aux_file_bytes"]},
)
def add_file(
    request: Request,
    subject_id: str,
    file: Annotated[UploadFile, File()],
    date: Annotated[dt.date, Form(description="The event's date.")],
    title: Annotated[str | None, Form(max_length=256)] = None,
    description: Annotated[str | None, Form()] = None,
    position: Annotated[int | None, Form(ge=0)] = None,
) -> EventOut:
    return records_of(request).add_file(
        subject_id,
        _upload(file),
        date,
        title=title,
        description=description,
        position=position,
    )


@router.get(
    "/subjects/{subject_id}/events/{event_id}/file",
    summary="Download an auxiliary file, byte for byte",
    response_class=StreamingResponse,
    responses=_ERRORS,
)
def get_file(request: Request, subject_id: str, event_id: int) -> StreamingResponse:
    records = records_of(request)
    return _stream(records, records.file_of(subject_id, event_id))


@router.post(
    "/subjects/{subject_id}/models",
    status_code=201,
    summary="Upload a heart model: its data (zip) and its XML metadata",
    description=(
        "The zip is checked (size, member count, compression ratio, no absolute or '..' "
        "paths, no links) and the XML parsed with entities refused. The studies the XML "
        "names are linked; unknown ones are refused unless allow_pending_links is set."
    ),
    responses={413: {"description": "Over max_heart_model_bytes"}, **_ERRORS},
    openapi_extra={LIMIT_KEY: ["max_heart_model_bytes", "max_heart_model_xml_bytes"]},
)
def add_model(
    request: Request,
    subject_id: str,
    data: Annotated[UploadFile, File(description="The model's data, a zip archive.")],
    metadata: Annotated[UploadFile, File(description="The model's XML metadata.")],
    date: Annotated[dt.date, Form()],
    title: Annotated[str | None, Form(max_length=256)] = None,
    description: Annotated[str | None, Form()] = None,
    position: Annotated[int | None, Form(ge=0)] = None,
    allow_pending_links: Annotated[bool, Form()] = False,
) -> EventOut:
    return records_of(request).add_model(
        subject_id,
        _upload(data),
        _upload(metadata),
        date,
        title=title,
        description=description,
        position=position,
        allow_pending_links=allow_pending_links,
    )


@router.get(
    "/subjects/{subject_id}/events/{event_id}/model/{part}",
    summary="Download a heart model's data (zip) or metadata (XML), byte for byte",
    response_class=StreamingResponse,
    responses=_ERRORS,
)
def get_model_part(
    request: Request,
    subject_id: str,
    event_id: int,
    part: Annotated[str, Path(pattern="^(data|metadata)$", description="data or metadata")],
) -> StreamingResponse:
    records = records_of(request)
    stored = records.model_part(subject_id, event_id, "data" if part == "data" else "metadata")
    return _stream(records, stored)


@router.get("/heart-models", summary="Search heart models by what their XML declares")
def search_models(
    request: Request,
    name: str | None = None,
    version: str | None = None,
    field: Annotated[
        list[str] | None,
        Query(description="NAME=VALUE of a declared field (repeatable; all must match)."),
    ] = None,
    study_instance_uid: str | None = None,
    subject_id: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventOut]:
    pairs = []
    for item in field or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRecord(f"field {item!r} is not NAME=VALUE")
        pairs.append((key, value))
    return records_of(request).search_models(
        name=name,
        version=version,
        fields=pairs,
        study_uid=study_instance_uid,
        subject_id=subject_id,
        offset=offset,
        limit=limit,
    )
