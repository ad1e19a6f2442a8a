"""Remote PACS in the worklist (the mirror): their sync state, and retrievals of their studies.

- ``GET /api/remote``: each ``[[remote_pacs]]`` with its mirror state.
- ``POST /api/remote/{name}/studies/{study}/retrieve``: fetch a mirrored study into the archive
  (a job; 202 with the retrieval, whose ``state`` is queued, running, done or failed).
- ``GET /api/remote/{name}/studies/{study}/retrieve``: that study's latest retrieval: how many
  instances of how many are stored, and why it failed when it did.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vesalius.errors import NotFound

router = APIRouter(prefix="/api/remote", tags=["remote PACS"])


def _when(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def retrieval_out(row: Any) -> dict[str, Any]:
    data = asdict(row)
    for key in ("created_at", "started_at", "finished_at"):
        data[key] = _when(data[key])
    data["study_uid"] = data.pop("study_instance_uid")
    data["local"] = row.state == "done"
    return data


def _mirror(request: Request) -> Any:
    return request.app.state.container.mirror


@router.get("", summary="The remote PACS mirrored into the worklist, with their sync state")
async def remotes(request: Request) -> list[dict[str, Any]]:
    settings = request.app.state.container.settings
    mirror = _mirror(request)

    def read() -> list[dict[str, Any]]:
        out = []
        for pacs in settings.remote_pacs:
            state = mirror.status(pacs.name)
            out.append(
                {
                    "name": pacs.name,
                    "protocol": "dicomweb" if pacs.dicomweb_url else "dimse",
                    "studies": state.studies,
                    "watermark": state.watermark,
                    "last_full_at": _when(state.last_full_at),
                    "last_success_at": _when(state.last_success_at),
                    "last_error": state.last_error,
                }
            )
        return out

    return await run_in_threadpool(read)


@router.post(
    "/{name}/studies/{study}/retrieve",
    status_code=202,
    summary="Fetch a remote study into this archive (a job with progress)",
    description=(
        "Queues the retrieval (WADO-RS from a DICOMweb remote, C-GET from a DIMSE one), or "
        "returns the one under way. Poll the GET of the same path for its progress."
    ),
)
async def retrieve(request: Request, name: str, study: str) -> JSONResponse:
    try:
        row = await run_in_threadpool(_mirror(request).request_retrieve, name, study)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return JSONResponse(retrieval_out(row), status_code=202)


@router.get("/{name}/studies/{study}/retrieve", summary="The latest retrieval of a remote study")
async def retrieval(request: Request, name: str, study: str) -> dict[str, Any]:
    row = await run_in_threadpool(_mirror(request).last_retrieval, name, study)
    if row is None:
        raise HTTPException(404, f"study {study} of {name!r} was never retrieved")
    return retrieval_out(row)
