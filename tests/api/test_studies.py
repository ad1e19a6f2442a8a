"""Deleting and downloading studies over ``/api/studies`` (and DICOMweb DELETE)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import httpx
import pytest
from dicomweb_client import DICOMwebClient

from dicomweb.conftest import RunningWeb, load_sample, serve
from vesalius.container import Container


@pytest.fixture
def api(container: Container) -> Iterator[RunningWeb]:
    yield from serve(container)


def test_download_zip_and_delete(api: RunningWeb) -> None:
    sample = load_sample(api.container)
    study, series, sop = sample.uids("ct1")
    response = httpx.get(f"{api.url}/api/studies/{study}/archive")
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert zf.testzip() is None
        contents = {name: zf.read(name) for name in zf.namelist()}
    assert sorted(contents.values()) == sorted(sample.files[n] for n in ("ct1", "ct2", "ct3"))
    assert f"{study}/{series}/{sop}.dcm" in contents
    one_series = httpx.get(f"{api.url}/api/studies/{study}/series/{series}/archive")
    with zipfile.ZipFile(io.BytesIO(one_series.content)) as zf:
        assert len(zf.namelist()) == 2

    deleted = httpx.delete(f"{api.url}/api/studies/{study}/series/{series}/instances/{sop}")
    assert deleted.json() == {"deleted_instances": 1}
    assert httpx.delete(f"{api.url}/api/studies/{study}/series/{series}").json() == {
        "deleted_instances": 1
    }
    assert httpx.delete(f"{api.url}/api/studies/{study}").json() == {"deleted_instances": 1}
    assert api.archive.totals().instances == 2
    assert list(api.archive.iter_orphans()) == []
    keys = [k for k in api.container.blobs.iter_keys() if k.startswith("dicom/")]
    assert len(keys) == 2
    gone = httpx.get(f"{api.url}/api/studies/{study}/archive")
    assert gone.status_code == 404 and study in gone.json()["detail"]
    assert httpx.delete(f"{api.url}/api/studies/{study}").status_code == 404


def test_dicomweb_client_delete(api: RunningWeb) -> None:
    sample = load_sample(api.container)
    study = sample.uids("mr1")[0]
    DICOMwebClient(url=api.url + "/dicom-web").delete_study(study)
    assert httpx.get(f"{api.url}/dicom-web/studies/{study}/metadata").status_code == 404
    assert api.archive.totals().studies == 2
