"""The central index over HTTP: site pushes, the search across sites (JSON and QIDO-RS), and
its portal page.

- ``POST /api/federation/studies``: a JSON array of records, or one record, from a site's
  indexer (``Authorization: Bearer <site key>``, or a seed-004 client's ``"key"`` member).
- ``GET /api/federation/studies``: search, paged, with a total.
- ``GET /federation/dicom-web/studies``: the same search as QIDO-RS (DICOM JSON).
- ``GET /federation``: the portal page.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from vesalius.auth.audit import AuditRecord
from vesalius.errors import InvalidQuery
from vesalius.federation.central import Central, SearchRequest, WrongSite
from vesalius.federation.records import BatchTooLarge, RecordError, format_datetime, parse_records
from vesalius.index.federation import CentralPage, CentralRow, SiteRow
from vesalius.web.api.worklist import normalize_date
from vesalius.web.guard import client_of, site_for_key

router = APIRouter(tags=["federation"])

DICOM_JSON = "application/dicom+json"


def central_of(request: Request) -> Central:
    central: Central = request.app.state.container.central
    if not central.enabled:
        raise HTTPException(
            404,
            "this node is not a central index: set central_index = true "
            "(VESALIUS_CENTRAL_INDEX) to accept pushes and search across sites",
        )
    return central


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read up to *limit* bytes: memory stays bounded whatever a client sends."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, _too_large(limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, _too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> str:
    return (
        f"the push body is larger than {limit} bytes (central_max_body_bytes): send smaller batches"
    )


def _audit(request: Request, site: SiteRow, outcome: str, detail: str) -> None:
    client = client_of(request)
    request.app.state.container.audit.record(
        AuditRecord(
            actor=f"site:{site.code}",
            action="store",
            protocol="http",
            object="POST /api/federation/studies",
            outcome=outcome,
            address=client.address,
            user_agent=client.user_agent,
            detail=detail[:1000],
        )
    )


@router.post(
    "/api/federation/studies",
    summary="Push study records from a site (central index)",
    description=(
        "A JSON array of study records (seed 004's fields), or one record. Authenticated by "
        "the site's key as a Bearer credential (or a `key` member of a single record). "
        "Idempotent: records are upserted by (site, study_iuid); `deleted: true` removes a "
        "study; a record with an older `seq` than the stored one is skipped as stale."
    ),
)
async def push(request: Request) -> dict[str, Any]:
    settings = request.app.state.container.settings
    body = await _read_body(request, settings.central_max_body_bytes)
    site: SiteRow | None = request.state.site
    try:
        data = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError as exc:
        if site is None:
            raise _no_key() from None
        _audit(request, site, "400", f"malformed JSON: {exc}")
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
    if site is None:
        key = data.get("key") if isinstance(data, dict) else None
        if isinstance(key, str):
            site = await run_in_threadpool(site_for_key, request, key)
        if site is None:
            raise _no_key()
    central = central_of(request)  # after authentication: strangers learn nothing
    if data is None:
        raise HTTPException(400, "the body is empty: send a JSON record or an array of records")
    try:
        records = parse_records(data, settings.central_max_batch)
        applied = await run_in_threadpool(central.ingest, site, records)
    except BatchTooLarge as exc:
        _audit(request, site, "413", str(exc))
        raise HTTPException(413, str(exc)) from None
    except WrongSite as exc:
        _audit(request, site, "403", str(exc))
        raise HTTPException(403, str(exc)) from None
    except RecordError as exc:
        _audit(request, site, "422", str(exc))
        raise HTTPException(422, f"nothing was applied: {exc}") from None
    _audit(
        request,
        site,
        "ok",
        f"{len(records)} records: {applied.upserted} upserted, {applied.deleted} deleted, "
        f"{applied.stale} stale",
    )
    return {"site": site.code, "received": len(records), **asdict(applied)}


def _no_key() -> HTTPException:
    return HTTPException(
        401,
        "a valid site key is required: send it as `Authorization: Bearer <key>` (unknown "
        "and revoked keys are refused)",
        headers={"WWW-Authenticate": 'Bearer realm="Vesalius federation"'},
    )


def _row_json(row: CentralRow) -> dict[str, Any]:
    return {
        "site": row.site,
        "center": row.site,
        "patient_pk": row.patient_pk,
        "patient_id": row.patient_id,
        "patient_name": row.patient_name,
        "study_pk": row.study_pk,
        "study_iuid": row.study_iuid,
        "study_datetime": format_datetime(row.study_date, row.study_time),
        "study_description": row.study_description,
        "study_modality": row.study_modality,
        "study_series": row.study_series,
        "study_instances": row.study_instances,
        "updated_at": row.updated_at.isoformat(timespec="seconds") + "Z",
    }


async def _search(central: Central, search: SearchRequest) -> CentralPage:
    try:
        return await run_in_threadpool(central.search, search)
    except InvalidQuery as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("/api/federation/studies", summary="Search studies across sites (central index)")
async def search_studies(
    request: Request,
    patient_id: Annotated[
        str | None, Query(description="Patient ID; DICOM wildcards * and ? allowed")
    ] = None,
    patient_name: Annotated[
        str | None,
        Query(description="Patient name, matched as DICOM person names (DOE^J*, any case)"),
    ] = None,
    date_from: Annotated[str | None, Query(alias="from", description="Study date from")] = None,
    date_to: Annotated[str | None, Query(alias="to", description="Study date to")] = None,
    modality: Annotated[str | None, Query(description="One or several: CT,MR")] = None,
    site: Annotated[str | None, Query(description="Site code(s), comma-separated")] = None,
    study_iuid: Annotated[str | None, Query(description="Study Instance UID")] = None,
    limit: Annotated[int, Query(ge=0, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    central = central_of(request)
    low = normalize_date(date_from, "from")
    high = normalize_date(date_to, "to")
    dates = f"{low or ''}-{high or ''}" if (low or high) else None
    page = await _search(
        central,
        SearchRequest(
            patient_id=patient_id,
            patient_name=patient_name,
            study_iuid=study_iuid,
            study_date=dates,
            modality=modality,
            site=site,
            limit=limit,
            offset=offset,
        ),
    )
    return {
        "total": page.total,
        "limit": limit,
        "offset": offset,
        "studies": [_row_json(row) for row in page.rows],
    }


# -- QIDO-RS over the central index -------------------------------------------------------------

_QIDO_KEYS = {
    "PatientID": "patient_id",
    "00100020": "patient_id",
    "PatientName": "patient_name",
    "00100010": "patient_name",
    "StudyDate": "study_date",
    "00080020": "study_date",
    "StudyInstanceUID": "study_iuid",
    "0020000D": "study_iuid",
    "ModalitiesInStudy": "modality",
    "00080061": "modality",
    "InstitutionName": "site",
    "00080080": "site",
}
_QIDO_IGNORED = {"includefield", "fuzzymatching", "accept", "charset"}


def _element(vr: str, value: Any) -> dict[str, Any] | None:
    if value is None or value == "" or value == []:
        return None
    return {"vr": vr, "Value": value if isinstance(value, list) else [value]}


def _qido_json(row: CentralRow) -> dict[str, Any]:
    """A study as DICOM JSON; elements without a value are left out (OHIF's list needs it)."""
    time = row.study_time.rstrip("0").rstrip(".") if row.study_time else None
    elements = {
        "00080020": _element("DA", row.study_date),
        "00080030": _element("TM", time),
        "00080061": _element("CS", [m for m in (row.study_modality or "").split("\\") if m]),
        "00080080": _element("LO", row.site),
        "00081030": _element("LO", row.study_description),
        "00100010": _element("PN", {"Alphabetic": row.patient_name} if row.patient_name else None),
        "00100020": _element("LO", row.patient_id),
        "0020000D": _element("UI", row.study_iuid),
        "00201206": _element("IS", row.study_series),
        "00201208": _element("IS", row.study_instances),
    }
    return {tag: element for tag, element in elements.items() if element is not None}


@router.get(
    "/federation/dicom-web/studies",
    summary="QIDO-RS search for studies across sites (central index)",
    description=(
        "Matching keys: PatientID, PatientName, StudyDate, StudyInstanceUID, ModalitiesInStudy "
        "and InstitutionName (the site code), by keyword or tag; limit and offset. Each "
        "answer names its site in InstitutionName (0008,0080)."
    ),
)
async def qido_studies(request: Request) -> Response:
    central = central_of(request)
    values: dict[str, str] = {}
    limit, offset = 100, 0
    for name, value in request.query_params.multi_items():
        lowered = name.lower()
        if lowered in ("limit", "offset"):
            if not value.isdigit():
                raise HTTPException(400, f"{name}={value!r} is not a whole number")
            if lowered == "limit":
                limit = min(int(value), 1000)
            else:
                offset = int(value)
            continue
        if lowered in _QIDO_IGNORED:
            continue
        field = _QIDO_KEYS.get(name) or _QIDO_KEYS.get(name.upper())
        if field is None:
            raise HTTPException(
                400,
                f"unknown query parameter {name!r}: the central index matches PatientID, "
                "PatientName, StudyDate, StudyInstanceUID, ModalitiesInStudy and "
                "InstitutionName (the site), with limit and offset",
            )
        values[field] = value.replace(",", "\\") if field == "study_iuid" else value
    if "site" in values:
        values["site"] = values["site"].replace("\\", ",")
    page = await _search(central, SearchRequest(**values, limit=limit, offset=offset))
    body = orjson.dumps([_qido_json(row) for row in page.rows])
    return Response(body, media_type=DICOM_JSON, headers={"X-Total-Count": str(page.total)})


# -- the portal page ------------------------------------------------------------------------------


@router.get("/federation", include_in_schema=False)
def federation_page(request: Request) -> HTMLResponse:
    from vesalius.web.portal.routes import page

    central = request.app.state.container.central
    return page(request, "federation.html", central_enabled=central.enabled)
