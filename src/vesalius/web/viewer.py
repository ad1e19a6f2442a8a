"""The OHIF viewer, served on the server's own origin under ``/viewer/``.

Same origin means the session cookie goes with every DICOMweb request the viewer makes and no
CORS is needed. The files are fetched by ``scripts/fetch-viewer`` (pinned version, checked
hash, rewritten for the sub-path); ``app-config.js`` is generated here per request, so it
points at this server's DICOMweb root, behind a proxy too (``public_url``). Any other path that
is not a file answers ``index.html``, so deep links (``/viewer/viewer?StudyInstanceUIDs=...``)
work.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from vesalius.web.dicomweb.common import base_url

PREFIX = "/viewer"
DIST = Path(__file__).parent / "viewer_dist"

router = APIRouter(tags=["viewer"], include_in_schema=False)

IMMUTABLE = "public, max-age=31536000, immutable"


def viewer_url(study_uid: str) -> str:
    """Where the viewer opens a study."""
    return f"{PREFIX}/viewer?StudyInstanceUIDs={study_uid}"


def app_config(root: str) -> str:
    """The viewer's configuration: one DICOMweb data source, this server."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "vesalius",
        "configuration": {
            "friendlyName": "Vesalius",
            "name": "vesalius",
            "wadoUriRoot": f"{root}/wado",
            "qidoRoot": f"{root}/dicom-web",
            "wadoRoot": f"{root}/dicom-web",
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": PREFIX,
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 25, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": "vesalius",
        "dataSources": [source],
        # The first-run tour ("Scrolling Through Images", 11 steps) is off: the viewer is
        # one click from the portal, used daily, not a demo.
        "customizationService": {"ohif.tours": {"$set": []}},
    }
    # Branded as Vesalius, its logo a link back to the portal. OHIF builds the logo by
    # calling a function, which JSON cannot carry: it is appended as code.
    portal = json.dumps(f"{root}/worklist")
    logo = json.dumps(f"{root}/static/vesalius.svg")
    branding = (
        "window.config.whiteLabeling = {\n"
        " createLogoComponentFn: function (React) {\n"
        f"  return React.createElement('a', {{href: {portal}, id: 'vesalius-portal',"
        " title: 'Back to the Vesalius portal',"
        " style: {display: 'flex', alignItems: 'center', gap: '8px', color: '#fff',"
        " fontWeight: 600, fontSize: '15px', textDecoration: 'none'}},\n"
        f"   React.createElement('img', {{src: {logo}, alt: '', width: 22, height: 22}}),"
        " 'Vesalius');\n"
        " }\n"
        "};\n"
    )
    return "window.config = " + json.dumps(config, indent=1) + ";\n" + branding


def _dist(request: Request) -> Path:
    configured = request.app.state.container.settings.viewer_dir
    dist = Path(configured) if configured else DIST
    if not (dist / "index.html").exists():
        raise HTTPException(
            503, f"the viewer is not installed in {dist}: run scripts/fetch-viewer (make install)"
        )
    return dist


@router.get(PREFIX)
def viewer_root() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/", status_code=308)


@router.get(PREFIX + "/app-config.js")
def viewer_config(request: Request) -> Response:
    return Response(
        app_config(base_url(request)),
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache"},
    )


@router.get(PREFIX + "/{path:path}")
def viewer_file(request: Request, path: str) -> Response:
    dist = _dist(request)
    target = (dist / path).resolve()
    if path and target.is_file() and target.is_relative_to(dist.resolve()):
        hashed = ".bundle." in target.name or target.suffix in (".wasm", ".woff2")
        headers = {"Cache-Control": IMMUTABLE if hashed else "no-cache"}
        return FileResponse(target, headers=headers)
    return Response(
        _index_html(dist), media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


def _index_html(dist: Path) -> bytes:
    """OHIF's start page, titled as Vesalius's viewer (the build says "OHIF Viewer")."""
    text = (dist / "index.html").read_text(encoding="utf-8")
    return text.replace("<title>OHIF Viewer</title>", "<title>Vesalius viewer</title>").encode()
