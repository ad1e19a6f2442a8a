"""Files and heart models: streamed in, kept in the blob store, and back byte for byte."""

from __future__ import annotations

import hashlib
import os

from records_helpers import RunningHttp, model_xml, model_zip, store_study, upload_model


def test_file_round_trip(http: RunningHttp) -> None:
    client = http.client
    client.post("/api/subjects", json={"subject_id": "XYZ00015"})
    content = os.urandom(1_500_000)  # over one read chunk
    response = client.post(
        "/api/subjects/XYZ00015/files",
        files={"file": ("echo report.pdf", content, "application/pdf")},
        data={"date": "2024-03-01", "description": "echo, parasternal views"},
    )
    assert response.status_code == 201, response.text
    event = response.json()
    assert event["kind"] == "aux_file" and event["title"] == "echo report.pdf"
    assert event["file"] == {
        "filename": "echo report.pdf",
        "media_type": "application/pdf",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    download = client.get(f"/api/subjects/XYZ00015/events/{event['id']}/file")
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["etag"] == f'"{hashlib.sha256(content).hexdigest()}"'
    assert "echo%20report.pdf" in download.headers["content-disposition"]
    [key] = http.record_blobs()
    assert key.startswith("records/files/")

    # Removing the event removes the file from the blob store.
    assert client.delete(f"/api/subjects/XYZ00015/events/{event['id']}").status_code == 204
    assert http.record_blobs() == []


def test_model_round_trip_and_search(http: RunningHttp) -> None:
    client = http.client
    study = store_study(http.container, "XYZ0001501")
    data = model_zip({"mesh/frame01.vtk": os.urandom(50_000), "mesh/README.txt": b"hello"})
    xml = model_xml(name="LV fit", version="2.1", frames=25, studies=(study,))
    response = upload_model(client, "XYZ00015", data, xml, title="Atlas fit")
    assert response.status_code == 201, response.text
    event = response.json()
    model = event["model"]
    assert (model["name"], model["version"], model["frames"]) == ("LV fit", "2.1", 25)
    assert model["fields"]["Author"] == "Atlas team"
    assert model["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert event["links"] == [{"study_instance_uid": study, "present": True}]
    assert event["title"] == "Atlas fit"

    base = f"/api/subjects/XYZ00015/events/{event['id']}/model"
    assert client.get(f"{base}/data").content == data
    assert client.get(f"{base}/metadata").content == xml
    assert client.get(f"{base}/other").status_code == 422

    def search(**params: object) -> list[int]:
        found = client.get("/api/heart-models", params=params)
        assert found.status_code == 200, found.text
        return [e["id"] for e in found.json()]

    assert search(name="LV fit") == [event["id"]]
    assert search(field="Author=Atlas team") == [event["id"]]
    assert search(field=["Author=Atlas team", "Frames=25"]) == [event["id"]]
    assert search(field="Author=Someone else") == []
    assert search(study_instance_uid=study, version="2.1") == [event["id"]]
    assert client.get("/api/heart-models", params={"field": "nonsense"}).status_code == 422


def test_model_with_pending_link(sqlite_http: RunningHttp) -> None:
    client = sqlite_http.client
    client.post("/api/subjects", json={"subject_id": "XYZ00015"})
    future = "1.2.826.0.1.3680043.10.1383.999"
    xml = model_xml(studies=(future,))
    response = upload_model(client, "XYZ00015", model_zip(), xml, allow_pending_links="true")
    assert response.status_code == 201, response.text
    assert response.json()["links"] == [{"study_instance_uid": future, "present": False}]
