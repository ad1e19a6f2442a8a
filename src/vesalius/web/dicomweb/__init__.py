"""DICOMweb (PS3.18) under ``/dicom-web`` and WADO-URI under ``/wado``.

Each module turns one family of HTTP requests into archive calls and the answers back into
DICOMweb's wire formats; no archive rule lives here.
"""

from __future__ import annotations

from fastapi import APIRouter

from vesalius.web.dicomweb import capabilities, delete, qido, rendered, stow, wado, wado_uri

PREFIX = "/dicom-web"


SERVICES = (qido, wado, rendered, stow, delete)


def resources() -> dict[str, dict[str, str]]:
    """Each path template under /dicom-web -> {method: summary}, from the routes themselves."""
    return capabilities.resources_of(PREFIX, [r for m in SERVICES for r in m.router.routes])


def router() -> APIRouter:
    """Every DICOMweb route: the PS3.18 services under /dicom-web and WADO-URI at /wado."""
    root = APIRouter()
    services = APIRouter(prefix=PREFIX)
    for module in SERVICES:
        services.include_router(module.router)
    root.include_router(services)
    root.include_router(capabilities.router_for(resources(), PREFIX))
    root.include_router(wado_uri.router)
    return root
