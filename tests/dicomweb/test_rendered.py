"""Rendered images and thumbnails, WADO-URI, CORS and the OpenAPI page."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image

from vesalius.container import Container, build

from .conftest import RunningWeb, load_sample, serve


def image(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_rendered_instance_window_viewport_quality(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    sample = load_sample(web.container)
    study, series, sop = sample.uids("ct1")
    url = f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop}/rendered"
    jpeg = image(httpx.get(url, headers={"Accept": "image/jpeg"}))
    assert jpeg.format == "JPEG" and jpeg.size == (32, 32)
    png = image(httpx.get(url, headers={"Accept": "image/png"}, params={"viewport": "64,64"}))
    assert png.format == "PNG" and png.size == (64, 64)
    # Stored values 0..4095 with intercept -1024: a window over [-1024, 3071] maps linearly.
    ds = sample.datasets["ct1"]
    hu = np.frombuffer(ds.PixelData, dtype="<u2").reshape(32, 32).astype(float) - 1024
    full = image(httpx.get(url, headers={"Accept": "image/png"}, params={"window": "1024,4096"}))
    expected = np.clip(((hu - 1023.5) / 4095 + 0.5) * 255, 0, 255).astype(np.uint8)
    assert np.abs(np.asarray(full).astype(int) - expected).max() <= 1
    narrow = image(httpx.get(url, headers={"Accept": "image/png"}, params={"window": "0,1,linear"}))
    assert set(np.unique(np.asarray(narrow))) <= {0, 255}
    small = httpx.get(url, params={"quality": "5"})
    big = httpx.get(url, params={"quality": "100"})
    assert len(small.content) < len(big.content)
    for bad in ({"window": "a,b"}, {"viewport": "0,0"}, {"quality": "101"}):
        response = httpx.get(url, params=bad)
        assert response.status_code == 400 and response.json()["detail"]
    frames = DICOMwebClient(url=web.dicomweb).retrieve_instance_rendered(
        study, series, sop, media_types=("image/png",)
    )
    assert frames.startswith(b"\x89PNG")


def test_thumbnails_and_multiframe(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    sample = load_sample(web.container)
    study, series, sop = sample.uids("rle1")
    base = f"{web.dicomweb}/studies/{study}/series/{series}"
    second = image(httpx.get(f"{base}/instances/{sop}/frames/2/rendered"))
    assert second.size == (8, 8)
    assert httpx.get(f"{base}/instances/{sop}/frames/3/rendered").status_code == 404
    assert image(httpx.get(f"{base}/thumbnail")).size == (128, 128)
    assert image(httpx.get(f"{web.dicomweb}/studies/{study}/thumbnail")).size == (128, 128)
    multi = httpx.get(f"{web.dicomweb}/studies/{sample.uids('ct1')[0]}/rendered")
    assert multi.headers["content-type"].startswith("multipart/related")
    assert multi.content.count(b"Content-Type: image/jpeg") == 3


def test_wado_uri(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    sample = load_sample(web.container)
    study, series, sop = sample.uids("mr1")
    params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    dicom = httpx.get(f"{web.url}/wado", params={**params, "contentType": "application/dicom"})
    assert dicom.headers["content-type"] == "application/dicom"
    assert dicom.content == sample.files["mr1"]
    explicit = httpx.get(
        f"{web.url}/wado",
        params={
            **params,
            "contentType": "application/dicom",
            "transferSyntax": "1.2.840.10008.1.2.1",
        },
    )
    assert explicit.status_code == 200 and explicit.content != sample.files["mr1"]
    jpeg = image(httpx.get(f"{web.url}/wado", params={**params, "rows": "32", "columns": "32"}))
    assert jpeg.format == "JPEG" and jpeg.size == (32, 32)
    missing = httpx.get(f"{web.url}/wado", params={**params, "objectUID": "1.2.3"})
    assert missing.status_code == 404 and "1.2.3" in missing.json()["detail"]
    assert httpx.get(f"{web.url}/wado", params={"requestType": "WADO"}).status_code == 400
    assert httpx.get(f"{web.url}/wado", params={**params, "nonsense": "1"}).status_code == 400


@pytest.fixture
def cors_web(make_settings) -> Iterator[RunningWeb]:  # type: ignore[no-untyped-def]
    container: Container = build(
        make_settings(cors_origins=["http://viewer.example"]), migrate=True
    )
    yield from serve(container)
    container.close()


def test_cors_preflight_for_a_viewer(cors_web: RunningWeb) -> None:
    response = httpx.options(
        f"{cors_web.dicomweb}/studies",
        headers={
            "Origin": "http://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Accept, Authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://viewer.example"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "accept" in allowed and "authorization" in allowed
    get = httpx.get(f"{cors_web.dicomweb}/studies", headers={"Origin": "http://viewer.example"})
    assert get.headers["access-control-allow-origin"] == "http://viewer.example"


def test_openapi_lists_dicomweb(sqlite_web: RunningWeb) -> None:
    paths = httpx.get(f"{sqlite_web.url}/openapi.json").json()["paths"]
    for path in (
        "/dicom-web/studies",
        "/dicom-web/studies/{study}/series/{series}/metadata",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered",
        "/wado",
        "/api/studies/{study}/archive",
    ):
        assert path in paths
    assert "post" in paths["/dicom-web/studies"]


def test_public_url_setting(sqlite_container: Container) -> None:
    sqlite_container.settings.public_url = "https://pacs.example.org/"
    gen = serve(sqlite_container)
    web = next(gen)
    try:
        sample = load_sample(sqlite_container)
        study = sample.uids("ct1")[0]
        (found,) = httpx.get(f"{web.dicomweb}/studies", params={"PatientID": "P1"}).json()
        assert found["00081190"]["Value"] == [f"https://pacs.example.org/dicom-web/studies/{study}"]
    finally:
        gen.close()
