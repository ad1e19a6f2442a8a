"""WADO-RS (PS3.18 10.4): instances, metadata, bulk data and frames.

Instances stream from the blob store in chunks; ``/metadata`` is built by joining the stored
DICOM JSON texts without parsing them; frames and bulk data read the one file they need.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian

from vesalius.archive import metadata
from vesalius.archive.service import Archive
from vesalius.dicom.syntaxes import TranscodeError, read_for
from vesalius.dicom.transcode import choose_syntax, encode_frames, frame_target
from vesalius.errors import NotFound
from vesalius.index.imaging import InstanceRecord
from vesalius.web.dicomweb import formatter, media, multipart, pixels
from vesalius.web.dicomweb.common import (
    DICOMWEB_TAG,
    archive_of,
    dicomweb_url,
    json_bytes_response,
    problem,
)

router = APIRouter(tags=[DICOMWEB_TAG])

CHUNK = 1 << 20
BLOCK = 4 << 20

_MULTIPART_DICOM = {
    "200": {
        "description": "The instances, one part each",
        "content": {'multipart/related; type="application/dicom"': {}},
    },
    "404": {"description": "A UID of the path is not in the archive"},
    "406": {"description": "No acceptable media type or transfer syntax"},
}


def records_or_404(
    archive: Archive, study: str, series: str | None = None, sop: str | None = None
) -> list[InstanceRecord]:
    """The instances under a path, or a 404 naming the UID that is not there."""
    try:
        records = archive.instances_of(study, series, sop)
    except NotFound:
        raise problem(404, metadata.explain_missing(archive, study, series, sop)) from None
    if sop is not None and series is not None:
        records = [r for r in records if r.series_instance_uid == series]
        if not records:
            raise problem(404, metadata.explain_missing(archive, study, series, sop))
    return records


def read_dataset(archive: Archive, record: InstanceRecord) -> Dataset:
    try:
        with archive.open(record) as fh:
            return dcmread(fh)
    except FileNotFoundError:
        raise problem(
            500, f"the stored file of {record.sop_instance_uid} is missing (run vesalius doctor)"
        ) from None


def transcode(
    data: bytes, stored: str, accepted: set[str], *, allow_lossy: bool = False
) -> tuple[bytes, str]:
    """A stored file in a syntax the client accepts: (Part 10 bytes, transfer syntax UID).

    Uncompressed little endian is preferred (explicit over implicit), then the compressed
    syntaxes Vesalius can encode (:func:`vesalius.dicom.transcode.choose_syntax`).
    """
    target = choose_syntax(stored, accepted, allow_lossy=allow_lossy)
    ds = read_for(data, stored, accepted, allow_lossy=allow_lossy)
    return encode(ds, target), target


def encode(ds: Dataset, syntax: str) -> bytes:
    """The dataset as a Part 10 file in *syntax* (little endian; pixel data already in it)."""
    uid = UID(syntax)
    ds.file_meta.TransferSyntaxUID = uid
    buffer = io.BytesIO()
    dcmwrite(
        buffer,
        ds,
        enforce_file_format=True,
        implicit_vr=uid.is_implicit_VR,
        little_endian=uid.is_little_endian,
    )
    return buffer.getvalue()


def _dicom_parts(
    archive: Archive,
    records: list[InstanceRecord],
    boundary: str,
    accepted: set[str],
    first: tuple[str, bytes, str] | None = None,
) -> Iterator[bytes]:
    """The multipart body: each instance as stored, or transcoded when the client needs it.

    Small files are gathered into blocks of about :data:`BLOCK` bytes: every block costs a
    hop between the worker thread and the event loop, so fewer, larger ones stream faster.
    Larger files are read and sent in :data:`CHUNK`-sized pieces; memory stays bounded.
    """
    as_stored = media.ANY_SYNTAX in accepted
    pending: list[bytes] = []
    size = 0
    for number, record in enumerate(records, 1):
        if number < len(records):  # its disk read overlaps this one's
            archive.prefetch(records[number])
        if as_stored or record.transfer_syntax_uid in accepted:
            syntax = record.transfer_syntax_uid
            pending.append(
                multipart.part_header(boundary, f"application/dicom; transfer-syntax={syntax}")
            )
            with archive.open(record) as fh:
                while chunk := fh.read(CHUNK):
                    pending.append(chunk)
                    size += len(chunk)
                    if size >= BLOCK:
                        yield b"".join(pending)
                        pending, size = [], 0
        else:
            if first is not None and first[0] == record.sop_instance_uid:
                data, syntax = first[1], first[2]  # transcoded before the answer started
            else:
                with archive.open(record) as fh:
                    data, syntax = transcode(
                        fh.read(),
                        record.transfer_syntax_uid,
                        accepted,
                        allow_lossy=archive.settings.transcode_lossy,
                    )
            pending.append(
                multipart.part_header(boundary, f"application/dicom; transfer-syntax={syntax}")
            )
            pending.append(data)
            size += len(data)
        pending.append(b"\r\n")
        if size >= BLOCK:
            yield b"".join(pending)
            pending, size = [], 0
    pending.append(multipart.closing(boundary))
    yield b"".join(pending)


def _retrieve(request: Request, study: str, series: str | None, sop: str | None) -> Response:
    archive = archive_of(request)
    ranges = media.parse_accept(request.headers.get("accept"))
    accepted = media.dicom_syntaxes(ranges)
    if accepted is None:
        raise problem(
            406,
            'instances are served as multipart/related; type="application/dicom" only; '
            f"the Accept header {request.headers.get('accept')!r} excludes it",
        )
    records = records_or_404(archive, study, series, sop)
    first: tuple[str, bytes, str] | None = None
    if media.ANY_SYNTAX not in accepted:
        # Transcode the first instance that needs it before answering, so that a request
        # that cannot be met is a 406 with the reason rather than a broken stream.
        record = next((r for r in records if r.transfer_syntax_uid not in accepted), None)
        if record is not None:
            try:
                with archive.open(record) as fh:
                    data, syntax = transcode(
                        fh.read(),
                        record.transfer_syntax_uid,
                        accepted,
                        allow_lossy=archive.settings.transcode_lossy,
                    )
            except TranscodeError as exc:
                raise problem(
                    406,
                    f"instance {record.sop_instance_uid}: {exc} "
                    "(or add transfer-syntax=* to get the instances as stored)",
                ) from None
            first = (record.sop_instance_uid, data, syntax)
    boundary = multipart.new_boundary()
    return StreamingResponse(
        _dicom_parts(archive, records, boundary, accepted, first),
        media_type=multipart.content_type(boundary, "application/dicom"),
    )


@router.get("/studies/{study}", summary="Retrieve a study", responses=_MULTIPART_DICOM)
def retrieve_study(request: Request, study: str) -> Response:
    return _retrieve(request, study, None, None)


@router.get(
    "/studies/{study}/series/{series}", summary="Retrieve a series", responses=_MULTIPART_DICOM
)
def retrieve_series(request: Request, study: str, series: str) -> Response:
    return _retrieve(request, study, series, None)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    summary="Retrieve an instance",
    responses=_MULTIPART_DICOM,
)
def retrieve_instance(request: Request, study: str, series: str, instance: str) -> Response:
    return _retrieve(request, study, series, instance)


# ---------------------------------------------------------------------------------------------
# Metadata


def _metadata(request: Request, study: str, series: str | None, sop: str | None) -> Response:
    archive = archive_of(request)
    try:
        rows = metadata.metadata_of(archive, study, series, sop)
    except NotFound as exc:
        raise problem(404, str(exc)) from None
    base = dicomweb_url(request) + f"/studies/{study}/series/"
    texts = (
        formatter.expand_bulk_text(
            row.metadata_json, f"{base}{row.series_instance_uid}/instances/{row.sop_instance_uid}"
        )
        for row in rows
    )
    return json_bytes_response(formatter.join_json_texts(texts))


_METADATA = {"200": {"content": {"application/dicom+json": {}}}}


@router.get("/studies/{study}/metadata", summary="Metadata of a study", responses=_METADATA)
def study_metadata(request: Request, study: str) -> Response:
    return _metadata(request, study, None, None)


@router.get(
    "/studies/{study}/series/{series}/metadata",
    summary="Metadata of a series",
    responses=_METADATA,
)
def series_metadata(request: Request, study: str, series: str) -> Response:
    return _metadata(request, study, series, None)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="Metadata of an instance",
    responses=_METADATA,
)
def instance_metadata(request: Request, study: str, series: str, instance: str) -> Response:
    return _metadata(request, study, series, instance)


# ---------------------------------------------------------------------------------------------
# Bulk data and frames


def _find_element(ds: Dataset, tag: int) -> bytes | None:
    """The value of the first element with *tag*, searching sequences depth first."""
    if tag in ds:
        value = ds[tag].value
        return value if isinstance(value, bytes) else None
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                found = _find_element(item, tag)
                if found is not None:
                    return found
    return None


def _octet_parts(parts: list[tuple[bytes, str]]) -> Response:
    boundary = multipart.new_boundary()
    body = bytearray()
    for data, content_type in parts:
        body += multipart.part_header(boundary, content_type)
        body += data
        body += b"\r\n"
    body += multipart.closing(boundary)
    first_type = parts[0][1].split(";")[0] if parts else "application/octet-stream"
    return Response(bytes(body), media_type=multipart.content_type(boundary, first_type))


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
    summary="Bulk data of an instance",
    responses={"200": {"content": {'multipart/related; type="application/octet-stream"': {}}}},
)
def bulkdata(request: Request, study: str, series: str, instance: str, tag: str) -> Response:
    try:
        number = int(tag, 16)
        if len(tag) != 8:
            raise ValueError
    except ValueError:
        raise problem(400, f"{tag!r} is not a tag: use 8 hexadecimal digits") from None
    archive = archive_of(request)
    record = records_or_404(archive, study, series, instance)[0]
    ds = read_dataset(archive, record)
    if number == 0x7FE00010 and "PixelData" in ds and pixels.is_encapsulated(ds):
        frames = pixels.stored_frames(ds, list(range(1, pixels.number_of_frames(ds) + 1)))
        media_type = media.FRAME_MEDIA_TYPES.get(
            record.transfer_syntax_uid, "application/octet-stream"
        )
        syntax = f"; transfer-syntax={record.transfer_syntax_uid}"
        return _octet_parts([(f, media_type + syntax) for f in frames])
    value = _find_element(ds, Tag(number))
    if value is None:
        raise problem(404, f"instance {instance} has no bulk data element {tag.upper()}")
    return _octet_parts([(value, "application/octet-stream")])


def parse_frame_list(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise problem(400, f"{value!r} is not a comma-separated list of frame numbers") from None
    if not numbers:
        raise problem(400, "no frame number given")
    return numbers


def frame_payload(
    ds: Dataset,
    record: InstanceRecord,
    numbers: list[int],
    accept: str | None,
    *,
    allow_lossy: bool = False,
) -> list[tuple[bytes, str]]:
    """Frames with their part Content-Type, as the Accept header asks (PS3.18 8.7.3.3)."""
    ranges = media.parse_accept(accept)
    stored = record.transfer_syntax_uid
    encapsulated = pixels.is_encapsulated(ds)
    stored_type = media.FRAME_MEDIA_TYPES.get(stored, "application/octet-stream")
    for wanted in ranges:
        syntax = wanted.transfer_syntax
        # Encapsulated frames as stored: for their own media type (or a wildcard), or for
        # octet-stream with transfer-syntax=* or the stored one.
        if encapsulated and (
            (wanted.allows(stored_type) and syntax in (None, media.ANY_SYNTAX, stored))
            or (wanted.type == "application/octet-stream" and syntax in (media.ANY_SYNTAX, stored))
        ):
            frames = pixels.stored_frames(ds, numbers)
            part_type = stored_type if wanted.allows(stored_type) else wanted.type
            return [(f, f"{part_type}; transfer-syntax={stored}") for f in frames]
        if wanted.allows("application/octet-stream") and syntax in (
            None,
            media.ANY_SYNTAX,
            ExplicitVRLittleEndian,
        ):
            frames = pixels.native_frames(ds, numbers)
            part_type = f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
            return [(f, part_type) for f in frames]
        target = frame_target(wanted.type, syntax, allow_lossy=allow_lossy)
        if target is not None:
            pixels.check_frames(ds, numbers)
            part_type = f"{wanted.type}; transfer-syntax={target}"
            return [(f, part_type) for f in encode_frames(ds, numbers, target)]
    raise problem(
        406,
        f"the frames are stored as {UID(stored).name}; ask for application/octet-stream "
        f"or {stored_type} (with transfer-syntax=* to get them as stored)",
    )


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    summary="Frames of an instance",
    responses={"200": {"content": {'multipart/related; type="application/octet-stream"': {}}}},
)
def retrieve_frames(
    request: Request, study: str, series: str, instance: str, frames: str
) -> Response:
    numbers = parse_frame_list(frames)
    archive = archive_of(request)
    record = records_or_404(archive, study, series, instance)[0]
    ds = read_dataset(archive, record)
    try:
        parts = frame_payload(
            ds,
            record,
            numbers,
            request.headers.get("accept"),
            allow_lossy=archive.settings.transcode_lossy,
        )
    except pixels.PixelError as exc:
        status = 404 if "does not exist" in str(exc) or "no pixel data" in str(exc) else 400
        raise problem(status, str(exc)) from None
    except TranscodeError as exc:
        raise problem(406, str(exc)) from None
    return _octet_parts(parts)
