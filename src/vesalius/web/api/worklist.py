"""The patient worklist and a patient's studies (``/api/worklist``, ``/api/patients/...``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from vesalius.index import worklist
from vesalius.index.worklist import WorklistFilters

router = APIRouter(prefix="/api", tags=["worklist"])


def normalize_date(value: str | None, name: str) -> str | None:
    """``YYYY-MM-DD`` or ``YYYYMMDD`` as ``YYYYMMDD``; empty as ``None``."""
    if not value:
        return None
    digits = value.strip().replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        raise HTTPException(422, f"{name} must be a date as YYYY-MM-DD")
    return digits


def filters_from(
    q: str | None,
    modality: str | None,
    date_from: str | None,
    date_to: str | None,
    sort: str,
    page: int,
    source: str | None = None,
) -> WorklistFilters:
    return WorklistFilters(
        text=(q or "").strip()[:64] or None,
        modality=(modality or "").strip()[:16] or None,
        date_from=normalize_date(date_from, "from"),
        date_to=normalize_date(date_to, "to"),
        sort="name" if sort == "name" else "last_study_date",
        page=page,
        source=(source or "").strip()[:64] or None,
    )


@router.get("/worklist", summary="Patients: search, filter, sort, pages of 50")
def search(
    request: Request,
    q: Annotated[
        str | None, Query(description="Part of the name (any case/accents) or ID start")
    ] = None,
    modality: Annotated[str | None, Query(description="Only patients with a study of it")] = None,
    date_from: Annotated[str | None, Query(alias="from", description="Study date from")] = None,
    date_to: Annotated[str | None, Query(alias="to", description="Study date to")] = None,
    sort: Annotated[Literal["last_study_date", "name"], Query()] = "last_study_date",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    source: Annotated[
        str | None,
        Query(description="'local' (this archive), a remote PACS's name, or all when left out"),
    ] = None,
) -> dict[str, Any]:
    filters = filters_from(q, modality, date_from, date_to, sort, page, source)
    if filters.source is not None:
        known = ["local"] + [p.name for p in request.app.state.container.settings.remote_pacs]
        if filters.source not in known:
            raise HTTPException(422, f"unknown source {filters.source!r}: use {', '.join(known)}")
    with request.app.state.container.db.read() as session:
        result = worklist.search_patients(session, filters)
    return {
        "patients": [asdict(row) for row in result.rows],
        "total": result.total,
        "total_is_exact": result.total_is_exact,
        "page": result.page,
        "per_page": result.per_page,
    }


@router.get("/patients/{patient_id:path}/studies", summary="A patient's studies and their series")
def patient_studies(request: Request, patient_id: str) -> dict[str, Any]:
    with request.app.state.container.db.read() as session:
        found = worklist.patient_studies(session, patient_id)
    if found is None:
        raise HTTPException(404, f"no patient {patient_id!r}")
    return asdict(found)
