"""STOW-RS of metadata and bulk data (PS3.18 10.5.1.2.2): instances sent as DICOM JSON.

The request is ``multipart/related; type="application/dicom+json"``: one or more
``application/dicom+json`` parts, each an array of instances in the DICOM JSON model, and the
bulk data parts their ``BulkDataURI`` values name by ``Content-Location``. Pixel data comes as
``application/octet-stream`` (native, explicit VR little endian) or as compressed frames
(``image/jls``, ``image/jp2``, ``image/jpeg``, ``image/dicom-rle`` ... with their
``transfer-syntax``), one part per frame under the same ``Content-Location``.

Each instance is built into a Part 10 file and stored by the archive's ``store``, exactly as a
``application/dicom`` part would be; an instance whose bulk data is missing, points outside
the request or does not fit its pixel description fails alone (FailedSOPSequence with the
reason) and nothing of it is stored.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian, HTJ2KLossless, JPEGBaseline8Bit

from vesalius.dicom.transcode import FRAME_TYPE_DEFAULTS
from vesalius.web.dicomweb import media, stow
from vesalius.web.dicomweb.common import archive_of, dicomweb_url, json_response, problem
from vesalius.web.dicomweb.multipart import MultipartError, MultipartReader, Part

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
PIXEL_DATA = 0x7FE00010
# The transfer syntax of a compressed frame part without a transfer-syntax parameter
# (PS3.18 Table 8.7.3-2).
FRAME_SYNTAX_DEFAULTS = {
    **FRAME_TYPE_DEFAULTS,
    "image/jpeg": JPEGBaseline8Bit,
    "image/jph": HTJ2KLossless,
}


class BulkDataError(ValueError):
    """An instance's bulk data cannot be found in the request or does not fit it."""


def _is_json_part(part: Part) -> bool:
    kind, _ = media.parse_content_type(part.content_type)
    return kind in (DICOM_JSON, "application/json")


def split_parts(parts: list[Part]) -> tuple[list[dict[str, Any]], dict[str, list[Part]]]:
    """The instances of the JSON parts, and the bulk data parts by Content-Location.

    Raises
    ------
    ValueError
        When a JSON part is not an array of DICOM JSON objects, or a bulk part has no
        Content-Location.
    """
    instances: list[dict[str, Any]] = []
    bulk: dict[str, list[Part]] = {}
    for number, part in enumerate(parts, start=1):
        if _is_json_part(part):
            try:
                value = orjson.loads(part.body)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"part {number} is not JSON: {exc}") from None
            if isinstance(value, dict):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ValueError(
                    f"part {number} must be an array of DICOM JSON instances (objects)"
                )
            instances.extend(value)
            continue
        location = part.headers.get("content-location", "").strip()
        if not location:
            raise ValueError(
                f"part {number} ({part.content_type or 'no type'}) has no Content-Location: "
                "a bulk data part must name the BulkDataURI it answers"
            )
        bulk.setdefault(location, []).append(part)
    return instances, bulk


def _expected_native_length(ds: Dataset) -> int | None:
    try:
        bits = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("SamplesPerPixel", 1) or 1)
            * int(ds.BitsAllocated)
            * int(ds.get("NumberOfFrames", 1) or 1)
        )
    except (AttributeError, TypeError, ValueError):
        return None
    return (bits + 7) // 8


def build_instance(item: dict[str, Any], bulk: dict[str, list[Part]]) -> bytes:
    """The Part 10 file of one DICOM JSON instance, its bulk data filled from *bulk*.

    Raises
    ------
    BulkDataError
        When a BulkDataURI names no part of this request, or the pixel data does not fit.
    ValueError
        When the JSON is not a DICOM JSON dataset.
    """
    syntax: dict[str, str] = {}

    def load(tag: str, vr: str, uri: str) -> bytes:
        parts = bulk.get(uri.strip())
        if not parts:
            raise BulkDataError(
                f"BulkDataURI {uri!r} of ({tag[:4]},{tag[4:]}) names no part of this request "
                "(each bulk data part needs a Content-Location equal to its BulkDataURI)"
            )
        kind, params = media.parse_content_type(parts[0].content_type or OCTET_STREAM)
        if int(tag, 16) != PIXEL_DATA or kind == OCTET_STREAM:
            if len(parts) > 1:
                raise BulkDataError(f"BulkDataURI {uri!r} names {len(parts)} parts; one only")
            return parts[0].body
        transfer = params.get("transfer-syntax") or FRAME_SYNTAX_DEFAULTS.get(kind)
        if not transfer:
            raise BulkDataError(
                f"pixel data of type {kind!r} without a transfer-syntax parameter; send "
                "application/octet-stream or a compressed frame type with its transfer-syntax"
            )
        syntax["compressed"] = transfer
        return encapsulate([p.body for p in parts])

    handler: Callable[[str, str, str], Any] = load
    try:
        ds = Dataset.from_json(item, bulk_data_uri_handler=handler)
    except BulkDataError:
        raise
    except Exception as exc:  # pydicom raises many kinds for a malformed dataset
        raise ValueError(f"not a DICOM JSON dataset: {exc}") from None
    transfer = syntax.get("compressed", ExplicitVRLittleEndian)
    if "PixelData" in ds:
        if transfer == ExplicitVRLittleEndian:
            expected = _expected_native_length(ds)
            actual = len(ds.PixelData)
            if expected is not None and actual not in (expected, expected + 1):
                raise BulkDataError(
                    f"the pixel data part has {actual} bytes; Rows x Columns x Samples x "
                    f"Bits Allocated x Frames needs {expected}"
                )
        else:
            ds["PixelData"].VR = "OB"
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID(transfer)
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except Exception as exc:  # missing type 1 meta, unencodable values...
        raise ValueError(f"cannot be written as DICOM: {exc}") from None
    return buffer.getvalue()


async def stow_json(request: Request, study_uid: str | None, params: dict[str, str]) -> Response:
    """Handle a STOW-RS request of JSON metadata and bulk data (called by :mod:`stow`).

    Each instance's outcome and the store response are those of every other STOW-RS request
    (:func:`stow.store_part`, :func:`stow.response_body`).
    """
    archive = archive_of(request)
    limit = archive.settings.stow_json_max_bytes
    try:
        reader = MultipartReader(params.get("boundary", ""))
    except MultipartError as exc:
        raise problem(400, str(exc)) from None
    parts: list[Part] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise problem(
                    413,
                    f"a STOW-RS request of JSON and bulk data is held in memory and may not "
                    f"exceed {limit} bytes (VESALIUS_STOW_JSON_MAX_BYTES); send fewer "
                    "instances per request, or application/dicom parts",
                )
            parts.extend(reader.feed(chunk))
    except MultipartError as exc:
        raise problem(400, f"not a readable multipart body: {exc}") from None
    if not reader.finished:
        raise problem(400, "not a readable multipart body: no closing boundary")
    try:
        instances, bulk = split_parts(parts)
    except ValueError as exc:
        raise problem(400, str(exc)) from None
    if not instances:
        raise problem(400, f"the request holds no {DICOM_JSON} part with instances")
    client = request.client
    origin = f"stow:{client.host if client else 'unknown'}"

    def store(item: dict[str, Any]) -> stow.Outcome:
        try:
            data = build_instance(item, bulk)
        except (BulkDataError, ValueError) as exc:
            uids = [_first(item, tag) for tag in ("00080016", "00080018")]
            return stow.Outcome(*uids, failure=stow.CANNOT_UNDERSTAND, reason=str(exc))
        part = Part({"content-type": "application/dicom"}, data)
        return stow.store_part(archive, part, study_uid, origin)

    outcomes = [await run_in_threadpool(store, item) for item in instances]
    result = stow.StowResult(outcomes)
    body = stow.response_body(result, dicomweb_url(request), study_uid)
    return json_response(body, status_code=result.status_code)


def _first(item: dict[str, Any], tag: str) -> str | None:
    """The first value of an element of a DICOM JSON object, if it is a string."""
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    return None
