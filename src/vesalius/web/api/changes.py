"""The change feed (``/api/changes``): every change to the imaging index, numbered without gaps.

The shape follows Orthanc's ``/changes`` (``Changes``/``Last``/``Done``, read on with
``since=Last``) with the fields of the Azure DICOM change feed (sequence, action, UIDs, time).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from vesalius.index import changes
from vesalius.index.changes import Change

router = APIRouter(prefix="/api/changes", tags=["changes"])


def change_out(change: Change) -> dict[str, Any]:
    return {
        "seq": change.seq,
        "timestamp": change.created_at.isoformat() + "Z",
        "kind": change.kind,
        "patient_id": change.patient_id,
        "study_uid": change.study_uid,
        "series_uid": change.series_uid,
        "sop_uid": change.sop_uid,
    }


def _read(container: Any, since: int, limit: int) -> dict[str, Any]:
    with container.db.read() as session:
        found = changes.changes_since(session, since, limit)
        latest = changes.latest_seq(session)
    last = found[-1].seq if found else min(since, latest)
    return {
        "changes": [change_out(c) for c in found],
        "last": last,
        "done": last >= latest,
        "latest": latest,
    }


@router.get("", summary="Changes to the imaging index after a sequence number, oldest first")
async def list_changes(
    request: Request,
    since: Annotated[
        int, Query(ge=0, le=2**62, description="Read changes numbered after this one")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10000, description="At most this many changes")] = 100,
) -> dict[str, Any]:
    """Read on with ``since`` set to the ``last`` of the answer until ``done`` is true."""
    return await run_in_threadpool(_read, request.app.state.container, since, limit)


def _latest(container: Any) -> dict[str, Any]:
    with container.db.read() as session:
        found = changes.latest(session)
        seq = changes.latest_seq(session)
    if found is None:
        return {"seq": seq, "kind": None, "timestamp": None}
    return change_out(found)


@router.get("/latest", summary="The newest change (its seq is 0 when there is none)")
async def latest_change(request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_latest, request.app.state.container)
