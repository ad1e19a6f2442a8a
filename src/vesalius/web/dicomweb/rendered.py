"""Rendered resources and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4) as JPEG or PNG.

An instance or frame renders to one image; a series or study renders to a multipart answer
with one image per instance. A thumbnail of a series or study is its middle instance.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from vesalius.archive.service import Archive
from vesalius.index.imaging import InstanceRecord
from vesalius.web.dicomweb import media, multipart, pixels
from vesalius.web.dicomweb.common import DICOMWEB_TAG, archive_of, problem
from vesalius.web.dicomweb.wado import parse_frame_list, read_dataset, records_or_404

router = APIRouter(tags=[DICOMWEB_TAG])

RENDERED_TYPES = ("image/jpeg", "image/png", "image/gif")
THUMBNAIL_VIEWPORT = (128, 128)

_IMAGE = {
    "200": {"content": {"image/jpeg": {}, "image/png": {}}},
    "400": {"description": "A malformed window, viewport or quality"},
    "404": {"description": "A UID or frame number that is not in the archive"},
    "406": {"description": "Neither JPEG nor PNG is acceptable"},
}


def _options(request: Request, thumbnail: bool = False) -> pixels.RenderOptions:
    q = request.query_params
    media_type = None
    for wanted in media.parse_accept(request.headers.get("accept")):
        media_type = next((t for t in RENDERED_TYPES if wanted.allows(t)), None)
        if media_type:
            break
    if media_type is None:
        raise problem(406, "rendered images are image/jpeg, image/png or image/gif")
    try:
        viewport = pixels.parse_viewport(q.get("viewport"))
        return pixels.RenderOptions(
            window=pixels.parse_window(q.get("window")),
            viewport=viewport or (THUMBNAIL_VIEWPORT if thumbnail else None),
            quality=pixels.parse_quality(q.get("quality")),
            media_type=media_type,
        )
    except pixels.PixelError as exc:
        raise problem(400, str(exc)) from None


def _render(
    archive: Archive, record: InstanceRecord, frame: int, options: pixels.RenderOptions
) -> bytes:
    ds = read_dataset(archive, record)
    try:
        return pixels.render_frame(ds, frame, options)
    except pixels.PixelError as exc:
        status = 404 if "does not exist" in str(exc) or "no pixel data" in str(exc) else 422
        raise problem(status, f"{record.sop_instance_uid}: {exc}") from None


def _one(request: Request, record: InstanceRecord, frame: int, thumbnail: bool) -> Response:
    options = _options(request, thumbnail)
    return Response(
        _render(archive_of(request), record, frame, options), media_type=options.media_type
    )


def _many(request: Request, records: list[InstanceRecord]) -> Response:
    options = _options(request)
    archive = archive_of(request)
    boundary = multipart.new_boundary()
    body = bytearray()
    for record in records:
        body += multipart.part_header(boundary, options.media_type)
        body += _render(archive, record, 1, options)
        body += b"\r\n"
    body += multipart.closing(boundary)
    return Response(bytes(body), media_type=multipart.content_type(boundary, options.media_type))


def _middle(records: list[InstanceRecord]) -> InstanceRecord:
    return records[len(records) // 2]


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/rendered",
    summary="Rendered instance",
    responses=_IMAGE,
)
def rendered_instance(request: Request, study: str, series: str, instance: str) -> Response:
    record = records_or_404(archive_of(request), study, series, instance)[0]
    return _one(request, record, 1, False)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
    summary="Rendered frame",
    responses=_IMAGE,
)
def rendered_frame(
    request: Request, study: str, series: str, instance: str, frames: str
) -> Response:
    numbers = parse_frame_list(frames)
    if len(numbers) != 1:
        raise problem(400, "render one frame at a time")
    record = records_or_404(archive_of(request), study, series, instance)[0]
    return _one(request, record, numbers[0], False)


@router.get(
    "/studies/{study}/series/{series}/rendered", summary="Rendered series", responses=_IMAGE
)
def rendered_series(request: Request, study: str, series: str) -> Response:
    return _many(request, records_or_404(archive_of(request), study, series))


@router.get("/studies/{study}/rendered", summary="Rendered study", responses=_IMAGE)
def rendered_study(request: Request, study: str) -> Response:
    return _many(request, records_or_404(archive_of(request), study))


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
    summary="Thumbnail of an instance",
    responses=_IMAGE,
)
def thumbnail_instance(request: Request, study: str, series: str, instance: str) -> Response:
    record = records_or_404(archive_of(request), study, series, instance)[0]
    return _one(request, record, 1, True)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
    summary="Thumbnail of a frame",
    responses=_IMAGE,
)
def thumbnail_frame(
    request: Request, study: str, series: str, instance: str, frames: str
) -> Response:
    numbers = parse_frame_list(frames)
    record = records_or_404(archive_of(request), study, series, instance)[0]
    return _one(request, record, numbers[0], True)


@router.get(
    "/studies/{study}/series/{series}/thumbnail", summary="Thumbnail of a series", responses=_IMAGE
)
def thumbnail_series(request: Request, study: str, series: str) -> Response:
    return _one(request, _middle(records_or_404(archive_of(request), study, series)), 1, True)


@router.get("/studies/{study}/thumbnail", summary="Thumbnail of a study", responses=_IMAGE)
def thumbnail_study(request: Request, study: str) -> Response:
    records = records_or_404(archive_of(request), study)
    first_series = [r for r in records if r.series_instance_uid == records[0].series_instance_uid]
    return _one(request, _middle(first_series), 1, True)
