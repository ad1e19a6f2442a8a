"""A study's completeness; deleting and downloading studies, series and instances
(``/api/studies/...``).

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
from vesalius.index import imaging
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


@router.get(
    "/{study}",
    summary="A study's counts and completeness",
    description=(
        "`stable` is true once the study is complete: no instance arrived for `stable_after_s`, "
        "or it said it is complete (every series holds the Images in Acquisition it "
        "announces, or a storage commitment request found all its instances). Each series "
        "lists `announced_instances` where its instances carry Images in Acquisition."
    ),
    responses=_NOT_FOUND,
)
def study_detail(request: Request, study: str) -> dict[str, Any]:
    archive = archive_of(request)
    with archive.db.read() as session:
        found = imaging.study_completeness(session, study)
    if found is None:
        raise problem(404, f"no study {study}")
    return {
        "study_instance_uid": found.study_instance_uid,
        "num_instances": found.num_instances,
        "num_series": len(found.series),
        "stable": found.stable,
        "stable_at": _iso(found.stable_at),
        "last_instance_at": _iso(found.last_instance_at),
        "series": [
            {
                "series_instance_uid": s.series_instance_uid,
                "num_instances": s.num_instances,
                "announced_instances": s.announced_instances,
                "complete": None
                if s.announced_instances is None
                else s.num_instances >= s.announced_instances,
            }
            for s in found.series
        ],
    }


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat() + "Z"


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
