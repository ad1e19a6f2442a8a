"""Deleting and downloading studies, series and instances (``/api/studies/...``).

Deletion goes through the archive (rows, then files). Downloads are zip files streamed while
they are written: stored entries (DICOM rarely deflates well), data descriptors instead of a
seekable output, so a study of any size never sits in memory.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from vesalius.archive import metadata
from vesalius.archive.service import Archive
from vesalius.errors import NotFound
from vesalius.index.imaging import InstanceRecord
from vesalius.web.dicomweb.common import archive_of, problem

router = APIRouter(prefix="/api/studies", tags=["studies"])

CHUNK = 1 << 20

_NOT_FOUND = {404: {"description": "A UID of the path is not in the archive"}}


def _delete(archive: Archive, study: str, series: str | None, sop: str | None) -> dict[str, Any]:
    metadata_check(archive, study, series, sop)
    try:
        removed = archive.delete(study, series, sop)
    except NotFound as exc:
        raise problem(404, str(exc)) from None
    return {"deleted_instances": removed}


def metadata_check(archive: Archive, study: str, series: str | None, sop: str | None) -> None:
    try:
        metadata.check_exists(archive, study, series, sop)
    except NotFound as exc:
        raise problem(404, str(exc)) from None


@router.delete("/{study}", summary="Delete a study (files and index rows)", responses=_NOT_FOUND)
def delete_study(request: Request, study: str) -> dict[str, Any]:
    return _delete(archive_of(request), study, None, None)


@router.delete("/{study}/series/{series}", summary="Delete a series", responses=_NOT_FOUND)
def delete_series(request: Request, study: str, series: str) -> dict[str, Any]:
    return _delete(archive_of(request), study, series, None)


@router.delete(
    "/{study}/series/{series}/instances/{instance}",
    summary="Delete an instance",
    responses=_NOT_FOUND,
)
def delete_instance(request: Request, study: str, series: str, instance: str) -> dict[str, Any]:
    return _delete(archive_of(request), study, series, instance)


class _Pipe:
    """A write-only file for zipfile that hands what it gets to a generator."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.position = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def zip_stream(archive: Archive, records: list[InstanceRecord]) -> Iterator[bytes]:
    """A zip file of the stored instances, as chunks; entries are study/series/instance.dcm."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[arg-type]
        for record in records:
            name = "/".join(
                (record.study_instance_uid, record.series_instance_uid, record.sop_instance_uid)
            )
            name += ".dcm"
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = record.size
            with (
                archive.open(record) as source,
                zf.open(info, mode="w", force_zip64=record.size > 0x7FFFFFFF) as target,
            ):
                while chunk := source.read(CHUNK):
                    target.write(chunk)
                    if len(pipe.buffer) >= CHUNK:
                        yield pipe.drain()
            yield pipe.drain()
    yield pipe.drain()


def _download(archive: Archive, study: str, series: str | None, name: str) -> StreamingResponse:
    metadata_check(archive, study, series, None)
    records = archive.instances_of(study, series)
    return StreamingResponse(
        zip_stream(archive, records),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
    )


@router.get(
    "/{study}/archive",
    summary="Download a study as a zip file",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, **_NOT_FOUND},
)
def download_study(request: Request, study: str) -> StreamingResponse:
    return _download(archive_of(request), study, None, study)


@router.get(
    "/{study}/series/{series}/archive",
    summary="Download a series as a zip file",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}, **_NOT_FOUND},
)
def download_series(request: Request, study: str, series: str) -> StreamingResponse:
    return _download(archive_of(request), study, series, series)
