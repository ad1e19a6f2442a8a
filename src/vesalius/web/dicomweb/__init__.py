"""DICOMweb (PS3.18) under ``/dicom-web`` and WADO-URI under ``/wado``.

Each module turns one family of HTTP requests into archive calls and the answers back into
DICOMweb's wire formats; no archive rule lives here.
"""

from __future__ import annotations

from fastapi import APIRouter

from vesalius.web.dicomweb import delete, qido, rendered, stow, wado, wado_uri

PREFIX = "/dicom-web"


def router() -> APIRouter:
    """Every DICOMweb route: the PS3.18 services under /dicom-web and WADO-URI at /wado."""
    root = APIRouter()
    services = APIRouter(prefix=PREFIX)
    for module in (qido, wado, rendered, stow, delete):
        services.include_router(module.router)
    root.include_router(services)
    root.include_router(wado_uri.router)
    return root
