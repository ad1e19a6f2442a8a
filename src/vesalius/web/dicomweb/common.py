"""What every DICOMweb route shares: the archive of the request, errors, absolute URLs."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import HTTPException, Request, Response

from vesalius.archive.service import Archive

DICOM_JSON = "application/dicom+json"
DICOMWEB_TAG = "DICOMweb"


def archive_of(request: Request) -> Archive:
    archive: Archive = request.app.state.container.archive
    return archive


def base_url(request: Request) -> str:
    """The server's own URL (scheme, host, root path), without a trailing slash.

    The ``public_url`` setting wins over the request's Host header (a proxy may rewrite it,
    and some clients send it without the port).
    """
    configured = request.app.state.container.settings.public_url
    if configured:
        return str(configured).rstrip("/")
    return str(request.base_url).rstrip("/")


def dicomweb_url(request: Request) -> str:
    return base_url(request) + "/dicom-web"


def problem(status: int, reason: str, headers: dict[str, str] | None = None) -> HTTPException:
    """An HTTP error whose body says, in words, what was wrong (``{"detail": reason}``)."""
    return HTTPException(status_code=status, detail=reason, headers=headers)


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """DICOM JSON (``application/dicom+json``) serialised with orjson."""
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    return Response(body, status_code=status_code, media_type=DICOM_JSON, headers=headers)


def json_bytes_response(body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, media_type=DICOM_JSON, headers=headers)
