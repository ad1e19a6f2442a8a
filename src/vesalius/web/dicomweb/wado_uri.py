"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

``contentType`` application/dicom gives the stored file (or explicit VR little endian with
``transferSyntax``), image/jpeg (the default) or image/png a rendered frame.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from vesalius.dicom.syntaxes import TranscodeError
from vesalius.web.dicomweb import pixels
from vesalius.web.dicomweb.common import archive_of, problem
from vesalius.web.dicomweb.wado import CHUNK, read_dataset, records_or_404, transcode

router = APIRouter(tags=["WADO-URI"])

KNOWN = frozenset(
    {
        "requestType",
        "studyUID",
        "seriesUID",
        "objectUID",
        "contentType",
        "transferSyntax",
        "frameNumber",
        "rows",
        "columns",
        "windowCenter",
        "windowWidth",
        "imageQuality",
        "anonymize",
        "charset",
        "region",
        "annotation",
        "presentationUID",
        "presentationSeriesUID",
    }
)


def _int(name: str, value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except ValueError:
        raise problem(400, f"{name}={value!r} is not a whole number") from None


@router.get(
    "/wado",
    summary="WADO-URI: one object as DICOM or as an image",
    responses={
        "200": {"content": {"application/dicom": {}, "image/jpeg": {}, "image/png": {}}},
        "400": {"description": "A missing or malformed parameter"},
        "404": {"description": "The object is not in the archive"},
    },
)
def wado(request: Request) -> Response:
    q = request.query_params
    unknown = sorted(set(q.keys()) - KNOWN)
    if unknown:
        raise problem(400, f"unknown WADO-URI parameter(s): {', '.join(unknown)}")
    if q.get("requestType") != "WADO":
        raise problem(400, "requestType=WADO is required")
    missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not q.get(k)]
    if missing:
        raise problem(400, f"missing parameter(s): {', '.join(missing)}")
    archive = archive_of(request)
    record = records_or_404(archive, q["studyUID"], q["seriesUID"], q["objectUID"])[0]
    content_types = [c.strip().split(";")[0] for c in q.get("contentType", "image/jpeg").split(",")]
    content_type = next(
        (c for c in content_types if c in ("application/dicom", "image/jpeg", "image/png")), None
    )
    if content_type is None:
        raise problem(406, "contentType must be application/dicom, image/jpeg or image/png")
    if content_type == "application/dicom":
        syntax = q.get("transferSyntax")
        if syntax and syntax != record.transfer_syntax_uid:
            with archive.open(record) as fh:
                try:
                    data, _ = transcode(fh.read(), record.transfer_syntax_uid, {syntax})
                except TranscodeError as exc:
                    raise problem(406, str(exc)) from None
            return Response(data, media_type="application/dicom")

        def chunks() -> object:
            with archive.open(record) as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk

        return StreamingResponse(
            chunks(),  # type: ignore[arg-type]
            media_type="application/dicom",
            headers={
                "Content-Length": str(record.size),
                "Content-Disposition": f'attachment; filename="{record.sop_instance_uid}.dcm"',
            },
        )
    frame = _int("frameNumber", q.get("frameNumber")) or 1
    rows, columns = _int("rows", q.get("rows")), _int("columns", q.get("columns"))
    window = None
    if q.get("windowCenter") or q.get("windowWidth"):
        try:
            window = pixels.parse_window(f"{q.get('windowCenter', '')},{q.get('windowWidth', '')}")
        except pixels.PixelError as exc:
            raise problem(400, str(exc)) from None
    try:
        quality = pixels.parse_quality(q.get("imageQuality"))
    except pixels.PixelError as exc:
        raise problem(400, str(exc)) from None
    options = pixels.RenderOptions(
        window=window,
        viewport=(columns or 0, rows or 0) if rows or columns else None,
        quality=quality,
        media_type=content_type,
    )
    ds = read_dataset(archive, record)
    try:
        image = pixels.render_frame(ds, frame, options)
    except pixels.PixelError as exc:
        raise problem(404 if "does not exist" in str(exc) else 422, str(exc)) from None
    return Response(image, media_type=content_type)
