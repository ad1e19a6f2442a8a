"""DICOMweb (PS3.18) under ``/dicom-web`` and WADO-URI under ``/wado``.

Each module turns one family of HTTP requests into archive calls and the answers back into
DICOMweb's wire formats; no archive rule lives here.
"""

from __future__ import annotations

from fastapi import FastAPI

from vesalius.web.dicomweb import capabilities, delete, qido, rendered, stow, wado, wado_uri

PREFIX = "/dicom-web"


SERVICES = (qido, wado, rendered, stow, delete)


def resources() -> dict[str, dict[str, str]]:
    """Each path template under /dicom-web -> {method: summary}, from the routes themselves."""
    return capabilities.resources_of(PREFIX, [r for m in SERVICES for r in m.router.routes])


def include(app: FastAPI) -> None:
    """Add every DICOMweb route to *app*: the PS3.18 services under /dicom-web, their
    capabilities (OPTIONS), and WADO-URI at /wado.

    Each module's router is included into the app itself, not through routers of routers:
    FastAPI matches the routes of a nested router again at every level of nesting, which was
    a third of the event loop's time on a STOW-RS request.
    """
    for module in SERVICES:
        app.include_router(module.router, prefix=PREFIX)
    app.include_router(capabilities.router_for(resources(), PREFIX))
    app.include_router(wado_uri.router)
