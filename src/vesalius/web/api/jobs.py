"""The job queue for administrators: ``/api/jobs`` (list), ``/api/jobs/{id}/retry|cancel``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from vesalius.errors import Conflict, NotFound
from vesalius.jobs import admin

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("", summary="Jobs, newest first, with the counts per state")
async def list_jobs(
    request: Request,
    state: Annotated[str | None, Query(description=", ".join(admin.STATES))] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> dict[str, Any]:
    db = request.app.state.container.db
    if state and state not in admin.STATES:
        raise HTTPException(422, f"unknown state {state!r}: use one of {', '.join(admin.STATES)}")

    def read() -> dict[str, Any]:
        rows = admin.list_jobs(db, state=state, kind=kind, limit=limit, offset=offset)
        return {"counts": admin.counts(db), "jobs": [admin.job_out(r) for r in rows]}

    return await run_in_threadpool(read)


async def _act(request: Request, action: Any, job_id: int) -> dict[str, Any]:
    try:
        row = await run_in_threadpool(action, request.app.state.container.db, job_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from None
    return admin.job_out(row)


@router.post("/{job_id}/retry", summary="Queue a dead or cancelled job again")
async def retry_job(request: Request, job_id: int) -> dict[str, Any]:
    return await _act(request, admin.retry, job_id)


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job")
async def cancel_job(request: Request, job_id: int) -> dict[str, Any]:
    return await _act(request, admin.cancel, job_id)
