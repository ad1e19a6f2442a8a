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


def test_a_study_that_announces_its_count_is_complete_early(api: RunningWeb) -> None:
    from dicomgen import make_dataset, to_bytes
    from vesalius import jobs
    from vesalius.events import StudyStable
    from vesalius.routing import settle

    container = api.container
    seen: list[StudyStable] = []
    container.events.subscribe(StudyStable, seen.append)
    context = jobs.JobContext(0, "studies.stability", 1, container)
    first = make_dataset(ImagesInAcquisition=3)
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    others = [
        make_dataset(StudyInstanceUID=study, SeriesInstanceUID=series, ImagesInAcquisition=3)
        for _ in range(2)
    ]
    for ds in (first, others[0]):
        container.archive.store(to_bytes(ds))
    settle({}, context)
    detail = httpx.get(f"{api.url}/api/studies/{study}").json()
    assert detail["stable"] is False and detail["num_instances"] == 2
    assert detail["series"] == [
        {
            "series_instance_uid": series,
            "num_instances": 2,
            "announced_instances": 3,
            "complete": False,
        }
    ]
    container.archive.store(to_bytes(others[1]))
    settle({}, context)  # long before stable_after_s (60 s)
    detail = httpx.get(f"{api.url}/api/studies/{study}").json()
    assert detail["stable"] is True and detail["stable_at"]
    assert detail["series"][0]["complete"] is True
    assert container.events.drain()
    assert [(e.study_instance_uid, e.reason) for e in seen] == [(study, "complete")]
    assert httpx.get(f"{api.url}/api/studies/1.2.3.404").status_code == 404
