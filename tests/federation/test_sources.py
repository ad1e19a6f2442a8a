"""A remote PACS (a real Orthanc) joins the federation through a site: `indexer push --source`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomgen import make_dataset, to_bytes
from federation.nodes import Node
from federation.orthanc import Orthanc, running_orthanc


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path) as running:
        yield running


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path, "central", None, VESALIUS_CENTRAL_INDEX="true")
    node.start()
    try:
        yield node
    finally:
        node.stop()


def found(central: Node) -> dict[str, dict[str, Any]]:
    page = central.get("/api/federation/studies", limit=1000)
    return {s["study_iuid"]: s for s in page["studies"]}


def test_orthanc_indexed_over_qido_rs(tmp_path: Path, orthanc: Orthanc, central: Node) -> None:
    uids = []
    for number in range(3):
        ds = make_dataset(
            PatientID=f"ORT{number}",
            PatientName=f"ORTHANC^PATIENT{number}",
            Modality="MR",
            StudyDescription="Remote study",
        )
        orthanc.store(to_bytes(ds))
        uids.append(ds.StudyInstanceUID)
    key = central.run(["central", "site", "add", "H9"]).stdout.strip()
    remotes = (
        f'[{{name = "pacs", dicomweb_url = "{orthanc.dicomweb}"}}, '
        f'{{name = "broken", dicomweb_url = "{central.url}/api/system"}}, '
        '{name = "gone", dicomweb_url = "http://127.0.0.1:9/dicom-web"}, '
        f'{{name = "dimse", ae_title = "{orthanc.aet}", host = "127.0.0.1", '
        f"port = {orthanc.dicom_port}}}, "
        '{name = "nodimse", ae_title = "NOBODY", host = "127.0.0.1", port = 9}]'
    )
    site = Node(
        tmp_path,
        "H9",
        VESALIUS_SITE_CODE="H9",
        VESALIUS_INDEXER_KEY=key,
        VESALIUS_INDEXER_URL=f"{central.url}/api/federation/studies",
        VESALIUS_REMOTE_PACS=remotes,
    )
    first = site.run(["indexer", "push", "--source", "pacs"])
    assert "Pushed 3 study records" in first.stdout, first.stdout + first.stderr
    studies = found(central)
    assert set(studies) == set(uids)
    one = studies[uids[0]]
    assert one["site"] == "H9" and one["patient_id"] == "ORT0"
    assert one["patient_name"] == "ORTHANC^PATIENT0" and one["study_modality"] == "MR"
    assert one["study_datetime"] == "2024-01-02T10:15:00" and one["study_instances"] == 1
    assert one["study_description"] == "Remote study"

    # the same PACS over C-FIND gives the same records
    over_dimse = site.run(["indexer", "push", "--source", "dimse"])
    assert "Pushed 3 study records" in over_dimse.stdout, over_dimse.stdout + over_dimse.stderr

    def content(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {u: {k: v for k, v in r.items() if k != "updated_at"} for u, r in records.items()}

    assert content(found(central)) == content(studies)
    unreachable = site.run(["indexer", "push", "--source", "nodimse"], check=False)
    assert unreachable.returncode == 1 and "cannot be reached" in unreachable.stderr

    # nothing changed at the PACS: nothing sent
    assert "Pushed 0 study records" in site.run(["indexer", "push", "--source", "pacs"]).stdout

    # a study more, one deleted, one with a new instance: exactly those three are sent
    extra = make_dataset(PatientID="ORT9", PatientName="LATE^ARRIVAL")
    orthanc.store(to_bytes(extra))
    orthanc.store(
        to_bytes(
            make_dataset(PatientID="ORT1", PatientName="ORTHANC^PATIENT1", StudyInstanceUID=uids[1])
        )
    )
    orthanc.delete_study(uids[2])
    later = site.run(["indexer", "push", "--source", "pacs"])
    assert "Pushed 3 study records" in later.stdout and "1 deleted" in later.stdout, later.stdout
    studies = found(central)
    assert set(studies) == {uids[0], uids[1], extra.StudyInstanceUID}
    assert studies[uids[1]]["study_instances"] == 2

    status = json.loads(site.run(["indexer", "status", "--json", "--source", "pacs"]).stdout)
    assert status["last_error"] is None and status["pushed_total"] == 6

    # a PACS that answers garbage, or is not there: a clear error, nothing pushed
    broken = site.run(["indexer", "push", "--source", "broken"], check=False)
    assert broken.returncode == 1 and "'broken'" in broken.stderr, broken.stderr
    gone = site.run(["indexer", "push", "--source", "gone"], check=False)
    assert gone.returncode == 1 and "cannot be reached" in gone.stderr
    unknown = site.run(["indexer", "push", "--source", "nope"], check=False)
    assert unknown.returncode == 1 and "pacs" in unknown.stderr
    assert set(found(central)) == {uids[0], uids[1], extra.StudyInstanceUID}
