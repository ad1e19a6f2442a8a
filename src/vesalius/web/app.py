"""The HTTP application: one ASGI app, runnable by ``vesalius serve`` or any ASGI server."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from vesalius import __version__
from vesalius.container import Container
from vesalius.web import apidocs, dicomweb, viewer
from vesalius.web.api import audit as audit_api
from vesalius.web.api import changes as changes_api
from vesalius.web.api import federation as federation_api
from vesalius.web.api import jobs as jobs_api
from vesalius.web.api import records as records_api
from vesalius.web.api import remote as remote_api
from vesalius.web.api import studies as studies_api
from vesalius.web.api import users as users_api
from vesalius.web.api import worklist as worklist_api
from vesalius.web.guard import AuditMiddleware, authorize
from vesalius.web.headers import SecurityHeadersMiddleware
from vesalius.web.portal import errors as portal_errors
from vesalius.web.portal import routes as portal
from vesalius.web.portal.assets import PortalStatic


def _wrap_outermost(app: FastAPI, middleware: Any) -> None:
    """Put *middleware* around the whole stack, Starlette's own error answers included (the
    ``add_middleware`` ones sit inside the handler of unexpected exceptions)."""
    build = app.build_middleware_stack

    def build_wrapped() -> Any:
        return middleware(build())

    app.build_middleware_stack = build_wrapped  # type: ignore[method-assign]


def create_app(container: Container) -> FastAPI:
    """Build the HTTP application around an open container."""
    app = FastAPI(
        title="Vesalius",
        version=__version__,
        description="A research PACS: DICOMweb, the archive API and the research records.",
        # The API pages are ordinary routes (apidocs), behind login and served offline.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # Every route, of every router, is authorised here by the permission table.
        dependencies=[Depends(authorize)],
    )
    app.state.container = container
    if container.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=container.settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Accept", "Authorization", "Content-Type"],
            expose_headers=["Content-Disposition", "Content-Location", "Warning"],
        )
    dicomweb.include(app)
    app.include_router(studies_api.router)
    app.include_router(records_api.router, prefix="/api")
    app.include_router(worklist_api.router)
    app.include_router(users_api.router)
    app.include_router(audit_api.router)
    app.include_router(changes_api.router)
    app.include_router(jobs_api.router)
    app.include_router(federation_api.router)
    app.include_router(remote_api.router)
    app.include_router(portal.router)
    app.include_router(viewer.router)
    app.include_router(apidocs.router)
    apidocs.mount_assets(app)
    for plugin in container.plugins:  # routes under /plugins/<name>/, rules of their own
        for prefix, router in plugin.routers:
            app.include_router(router, prefix=prefix, tags=[f"plugin {plugin.name}"])
    app.mount("/static", PortalStatic(directory=portal.STATIC), name="static")
    app.add_middleware(AuditMiddleware, audit=container.audit)
    portal_errors.install(app)
    _wrap_outermost(app, SecurityHeadersMiddleware)

    @app.get("/api/system", tags=["system"], summary="Version and archive totals")
    def system() -> dict[str, Any]:
        totals = container.archive.totals()
        return {
            "name": "Vesalius",
            "version": __version__,
            "ae_title": container.settings.ae_title,
            "patients": totals.patients,
            "studies": totals.studies,
            "series": totals.series,
            "instances": totals.instances,
            "bytes": totals.bytes,
        }

    @app.get("/api/conformance", tags=["system"], summary="DICOM conformance statement")
    def conformance_statement() -> dict[str, Any]:
        from vesalius.conformance import statement

        return statement(container.settings)

    return app
