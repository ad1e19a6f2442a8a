"""The audit trail search (``/api/audit``) and the health summary (``/api/health``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from vesalius.cli import doctor
from vesalius.index.people import AuditFilters

router = APIRouter(prefix="/api", tags=["audit"])


def audit_filters(
    actor: str | None,
    action: str | None,
    q: str | None,
    since: dt.date | None,
    until: dt.date | None,
    limit: int,
    offset: int,
    patient: str | None = None,
) -> AuditFilters:
    return AuditFilters(
        actor=actor or None,
        action=action or None,
        text=q or None,
        patient=patient,
        since=dt.datetime.combine(since, dt.time()) if since else None,
        until=dt.datetime.combine(until + dt.timedelta(days=1), dt.time()) if until else None,
        limit=limit,
        offset=offset,
    )


@router.get("/audit", summary="Search the audit trail, newest first")
def search_audit(
    request: Request,
    actor: str | None = None,
    action: str | None = None,
    q: Annotated[str | None, Query(description="Part of the object, or a study UID")] = None,
    patient: Annotated[
        str | None,
        Query(description="A patient ID: views of its pages and accesses to its studies"),
    ] = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    filters = audit_filters(actor, action, q, since, until, limit, offset, patient)
    return request.app.state.container.audit.search(filters)  # type: ignore[no-any-return]


def health(container: Any) -> dict[str, Any]:
    """What ``vesalius doctor`` checks (ports aside: we hold them) and the archive's counts."""
    settings = container.settings
    checks = [
        c
        for check in (doctor.check_versions, doctor.check_database, doctor.check_storage)
        for c in check(settings)
    ]
    totals = container.archive.totals()
    return {
        "checks": [asdict(c) for c in checks],
        "counts": {
            "patients": totals.patients,
            "studies": totals.studies,
            "series": totals.series,
            "instances": totals.instances,
            "storage_bytes": totals.bytes,
            "active_sessions": container.auth.active_sessions(),
            "users": len(container.auth.users()),
        },
    }


@router.get("/health", summary="Checks and counts for administrators")
async def get_health(request: Request) -> dict[str, Any]:
    return await run_in_threadpool(health, request.app.state.container)
