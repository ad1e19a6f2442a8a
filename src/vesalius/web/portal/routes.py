"""Portal pages: login/logout, worklist, study browser, subject timeline, account, admin.

Pages read through the same services and JSON API as every other client; the permission
table (:mod:`vesalius.auth.permissions`) decides who sees which page, before any of these
functions runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from vesalius import __version__
from vesalius.auth.accounts import LoginRefused
from vesalius.auth.permissions import DEFAULT_ROLE, ROLE_LABELS, Permission, Role
from vesalius.errors import NotFound
from vesalius.index import worklist
from vesalius.records.subjects import derive_subject
from vesalius.web.api.audit import health
from vesalius.web.guard import (
    CSRF_FIELD,
    SESSION_COOKIE,
    Actor,
    actor_of,
    client_of,
    identify,
    secure_cookies,
)
from vesalius.web.portal import display
from vesalius.web.viewer import viewer_url

HERE = Path(__file__).parent
STATIC = HERE / "static"
VENDOR = STATIC / "vendor"  # browser libraries installed by scripts/fetch-portal-assets


def vendor_url(name: str) -> str | None:
    """The URL of an installed browser library (versioned by its build), or None."""
    if not (VENDOR / name).is_file():
        return None
    stamp = VENDOR / "STAMP"
    version = stamp.read_text().strip()[:16] if stamp.is_file() else "0"
    return f"/static/vendor/{name}?v={version}"


templates = Jinja2Templates(directory=HERE / "templates")

router = APIRouter(include_in_schema=False)


def _dicom_date(value: str | None) -> str:
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or ""


templates.env.filters["dicom_date"] = _dicom_date
templates.env.filters["person"] = display.person_name
templates.env.filters["when"] = display.timestamp
templates.env.filters["urlpart"] = display.url_part


def page(request: Request, name: str, **context: Any) -> HTMLResponse:
    actor: Actor | None = getattr(request.state, "actor", None)
    base: dict[str, Any] = {
        "actor": actor,
        "csrf": actor.csrf_token if actor else "",
        "csrf_field": CSRF_FIELD,
        "may": (lambda p: actor is not None and actor.may(Permission(p))),
        "version": __version__,
        "role_labels": ROLE_LABELS,
    }
    response = templates.TemplateResponse(request, name, {**base, **context})
    response.headers["Cache-Control"] = "no-store"
    return response


def _safe_next(value: str | None) -> str:
    """Only local paths: never send a user to another site after login."""
    if not value or not value.startswith("/") or value.startswith("//") or urlsplit(value).netloc:
        return "/worklist"
    return value


# -- login and logout --------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    auth = request.app.state.container.auth
    if await run_in_threadpool(identify, request, auth) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return page(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    next: Annotated[str | None, Form()] = None,
    remember: Annotated[str | None, Form()] = None,
) -> Response:
    auth = request.app.state.container.auth
    try:
        token, _session = auth.login(username, password, client_of(request), bool(remember))
    except LoginRefused as exc:
        response = page(request, "login.html", next=_safe_next(next), error=str(exc))
        response.status_code = 401
        return response
    response = RedirectResponse(_safe_next(next), status_code=303)
    max_age = int(request.app.state.container.settings.remember_days * 86400) if remember else None
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    actor = actor_of(request)
    if actor.cookie:
        request.app.state.container.auth.logout(actor.cookie, client_of(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


# -- pages -------------------------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    return RedirectResponse("/worklist", status_code=303)


@router.get("/worklist")
def worklist_page(request: Request) -> Response:
    remotes = [p.name for p in request.app.state.container.settings.remote_pacs]
    return page(request, "worklist.html", remote_sources=remotes)


# ":path": an ID may hold "/" (sent as %2F, decoded before routing) or be empty.
@router.get("/patients/{patient_id:path}")
def patient_page(request: Request, patient_id: str) -> Response:
    with request.app.state.container.db.read() as session:
        found = worklist.patient_studies(session, patient_id)
    if found is None:
        raise HTTPException(404, f"There is no patient with the ID {patient_id!r}.")
    scheme = request.app.state.container.settings.subject_id_scheme
    subject = derive_subject(patient_id, scheme)
    return page(
        request,
        "patient.html",
        patient=found,
        viewer_url=viewer_url,
        subject_id=subject.subject_id if subject else None,
    )


@router.get("/studies/{study}")
def study_page(request: Request, study: str, series: str | None = None) -> Response:
    """One study: its series, and the first series (or *series*) in the stack viewer."""
    with request.app.state.container.db.read() as session:
        patient_id = worklist.patient_of_study(session, study)
        found = worklist.patient_studies(session, patient_id) if patient_id is not None else None
    studies = found.studies if found is not None else []
    shown = next(
        (s for s in studies if s.study_instance_uid == study and s.source == "local"), None
    )
    if found is None or shown is None:
        with request.app.state.container.db.read() as session:
            remote = worklist.patient_of_remote_study(session, study)
        if remote is not None:  # only a remote PACS holds it: its patient page retrieves it
            return RedirectResponse(f"/patients/{display.url_part(remote)}", status_code=303)
        raise HTTPException(404, f"There is no study with the UID {study!r}.")
    uids = [s.series_instance_uid for s in shown.series]
    initial = series if series in uids else (uids[0] if uids else "")
    preview = _middle_instance(request, study, initial) if initial else None
    return page(
        request,
        "study.html",
        patient=found,
        study=shown,
        initial_series=initial,
        preview_sop=preview,
        viewer_url=viewer_url,
        stack_viewer=vendor_url("stack-viewer.js"),
    )


def _middle_instance(request: Request, study: str, series: str) -> str | None:
    """The instance the series' thumbnail shows (its middle one), shown first on the study page."""
    try:
        records = request.app.state.container.archive.instances_of(study, series)
    except NotFound:
        return None
    return str(records[len(records) // 2].sop_instance_uid)


@router.get("/subjects/{subject_id}")
def subject_page(request: Request, subject_id: str) -> Response:
    try:
        request.app.state.container.records.get_subject(subject_id)
    except NotFound:
        raise HTTPException(404, f"There is no subject with the ID {subject_id!r}.") from None
    return page(
        request,
        "subject.html",
        subject_id=subject_id,
        viewer_prefix=viewer_url(""),
        chart_js=vendor_url("chart.umd.min.js"),
    )


@router.get("/account")
def account_page(request: Request) -> Response:
    return page(request, "account.html")


@router.get("/admin/users")
def users_page(request: Request) -> Response:
    users = request.app.state.container.auth.users()
    return page(request, "users.html", users=users, roles=list(Role), default_role=DEFAULT_ROLE)


@router.get("/admin/audit")
def audit_page(request: Request) -> Response:
    return page(request, "audit.html")


@router.get("/admin/jobs")
def jobs_page(request: Request, state: str | None = None) -> Response:
    from vesalius.jobs import admin as jobs_admin

    db = request.app.state.container.db
    if state not in jobs_admin.STATES:
        state = None
    rows = jobs_admin.list_jobs(db, state=state, limit=200)
    return page(
        request,
        "jobs.html",
        jobs=[jobs_admin.job_out(r) for r in rows],
        counts=jobs_admin.counts(db),
        state=state,
    )


@router.get("/admin/health")
async def health_page(request: Request) -> Response:
    data = await run_in_threadpool(health, request.app.state.container)
    return page(request, "health.html", health=data)
