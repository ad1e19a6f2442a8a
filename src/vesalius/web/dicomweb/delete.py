"""DELETE on DICOMweb resources, as dicomweb-client's ``delete_*`` methods send it.

Not part of PS3.18 proper; the same archive deletion as ``/api/studies``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from vesalius.web.api.studies import _delete
from vesalius.web.dicomweb.common import DICOMWEB_TAG, archive_of

router = APIRouter(tags=[DICOMWEB_TAG])


@router.delete("/studies/{study}", summary="Delete a study", status_code=204)
def delete_study(request: Request, study: str) -> Response:
    _delete(archive_of(request), study, None, None)
    return Response(status_code=204)


@router.delete("/studies/{study}/series/{series}", summary="Delete a series", status_code=204)
def delete_series(request: Request, study: str, series: str) -> Response:
    _delete(archive_of(request), study, series, None)
    return Response(status_code=204)


@router.delete(
    "/studies/{study}/series/{series}/instances/{instance}",
    summary="Delete an instance",
    status_code=204,
)
def delete_instance(request: Request, study: str, series: str, instance: str) -> Response:
    _delete(archive_of(request), study, series, instance)
    return Response(status_code=204)
