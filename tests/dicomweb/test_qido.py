"""QIDO-RS with the real dicomweb-client against the running server."""

from __future__ import annotations

import httpx
import pytest
from dicomweb_client import DICOMwebClient
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from dicomgen import make_file
from vesalius.config import RemoteAE

from .conftest import RunningWeb, load_sample


def client(web: RunningWeb) -> DICOMwebClient:
    return DICOMwebClient(url=web.dicomweb)


def values(result: dict, tag: str) -> list:  # type: ignore[type-arg]
    return result.get(tag, {}).get("Value", [])


def test_search_studies_answers_dicom_json_with_computed_attributes(web: RunningWeb) -> None:
    sample = load_sample(web.container)
    studies = client(web).search_for_studies()
    assert len(studies) == 3
    by_uid = {values(s, "0020000D")[0]: s for s in studies}
    study1 = by_uid[sample.uids("ct1")[0]]
    assert study1["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]}
    assert values(study1, "00201206") == [2]  # NumberOfStudyRelatedSeries
    assert values(study1, "00201208") == [3]  # NumberOfStudyRelatedInstances
    assert values(study1, "00080061") == ["CT"]  # ModalitiesInStudy
    # dicomweb-client sends "Host: 127.0.0.1" without the port: check the URL over httpx.
    direct = httpx.get(f"{web.dicomweb}/studies", params={"PatientID": "P1"}).json()
    assert values(direct[0], "00081190") == [
        f"{web.public_dicomweb}/studies/{sample.uids('ct1')[0]}"
    ]
    assert values(study1, "00080056") == ["ONLINE"]
    # Default attributes with no value are left out, not sent as a bare {"vr": ...}.
    assert "00080201" not in study1


def test_no_answer_carries_an_element_without_a_value(web: RunningWeb) -> None:
    """What OHIF's study list asks; a bare {"vr": "CS"} made it fail ("Data Source Connection
    Error"): Modality is no study attribute, and this study's ModalitiesInStudy is empty."""
    load_sample(web.container)
    web.archive.store(
        make_file(PatientID="NOMOD", Modality="", StudyDescription="", ReferringPhysicianName="")
    )
    ohif = {
        "includefield": "00081030,00080060,00080090,00100030",
        "limit": "101",
        "offset": "0",
        "fuzzymatching": "false",
    }
    studies = httpx.get(f"{web.dicomweb}/studies", params=ohif).json()
    assert len(studies) == 4
    series = httpx.get(f"{web.dicomweb}/series", params={"includefield": "all"}).json()
    instances = httpx.get(f"{web.dicomweb}/instances", params={"includefield": "all"}).json()
    for answer in studies + series + instances:
        empty = [
            t for t, e in answer.items() if not ({"Value", "BulkDataURI", "InlineBinary"} & set(e))
        ]
        assert empty == [], f"elements with neither a value nor bulk data: {empty}"
        assert all(e.get("Value") != [] for e in answer.values())
    bare = next(s for s in studies if values(s, "00100020") == ["NOMOD"])
    assert "00080061" not in bare and "00080060" not in bare and "00081030" not in bare
    others = [s for s in studies if values(s, "00100020") != ["NOMOD"]]
    assert all(values(s, "00080061") for s in others)  # ModalitiesInStudy where there is one
    assert all("00080060" not in s for s in studies)  # Modality is a series attribute


def test_search_matches_like_c_find(web: RunningWeb) -> None:
    sample = load_sample(web.container)
    dw = client(web)
    jane = dw.search_for_studies(search_filters={"PatientName": "doe^ja*"})
    assert {values(s, "0020000D")[0] for s in jane} == {
        sample.uids("mr1")[0],
        sample.uids("rle1")[0],
    }
    dated = dw.search_for_studies(search_filters={"StudyDate": "20230101-20231231"})
    assert [values(s, "0020000D")[0] for s in dated] == [sample.uids("mr1")[0]]
    series = dw.search_for_series(sample.uids("ct1")[0])
    assert sorted(values(s, "00200011")[0] for s in series) == [1, 2]
    instances = dw.search_for_instances(sample.uids("ct1")[0], sample.uids("ct1")[1])
    assert {values(i, "00080018")[0] for i in instances} == {
        sample.uids("ct1")[2],
        sample.uids("ct2")[2],
    }
    everywhere = dw.search_for_instances(search_filters={"Modality": "MR"})
    assert [values(i, "00080018")[0] for i in everywhere] == [sample.uids("mr1")[2]]
    # Not scoped to a study or series: the study and series defaults are there too.
    assert values(everywhere[0], "00100020") == ["P2"]
    assert values(everywhere[0], "00080060") == ["MR"]


def test_dimse_and_dicomweb_answer_the_same(web: RunningWeb) -> None:
    from vesalius.dimse.server import DicomServer

    load_sample(web.container)
    # An unlisted AE may only echo and store: list the querying AE with a role.
    web.container.settings.remote_ae = [
        RemoteAE(name="querier", ae_title="TESTSCU", role="referring_doctor")
    ]
    server = DicomServer(web.container.settings, web.archive)
    host, port = server.start()
    try:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate(host, port, ae_title=web.container.settings.ae_title)
        assert assoc.is_established
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientName = "DOE*"
        identifier.StudyInstanceUID = ""
        identifier.NumberOfStudyRelatedInstances = ""
        found = {}
        for status, answer in assoc.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind
        ):
            if status and status.Status == 0xFF00:
                found[answer.StudyInstanceUID] = int(answer.NumberOfStudyRelatedInstances)
        assoc.release()
    finally:
        server.stop()
    studies = client(web).search_for_studies(search_filters={"PatientName": "DOE*"})
    web_found = {values(s, "0020000D")[0]: values(s, "00201208")[0] for s in studies}
    assert found == web_found
    assert len(found) == 3


def test_includefield_limit_offset(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    sample = load_sample(web.container)
    dw = client(web)
    studies = dw.search_for_studies(fields=["StudyDescription", "00101010"])
    assert all("00081030" in s for s in studies)
    first = dw.search_for_studies(limit=2)
    rest = dw.search_for_studies(limit=2, offset=2)
    assert len(first) == 2 and len(rest) == 1
    assert {values(s, "0020000D")[0] for s in first + rest} == {
        sample.uids(n)[0] for n in ("ct1", "mr1", "rle1")
    }
    everything = dw.search_for_instances(
        sample.uids("ct1")[0], sample.uids("ct1")[1], fields=["all"]
    )
    # BitsStored is no default instance attribute: only "all" brings it.
    assert values(everything[0], "00280101") == [12]
    assert "00280101" not in dw.search_for_instances(sample.uids("ct1")[0])[0]
    # Bulk data in includefield=all answers are absolute URLs, never placeholders.
    assert (
        "bulkdata:"
        not in httpx.get(f"{web.dicomweb}/instances", params={"includefield": "all"}).text
    )


def test_what_ohif_sends(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    sample = load_sample(web.container)
    study = sample.uids("ct1")[0]
    query = (
        "/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"
        "&PatientName=DOE%5EJOHN"
    )
    response = httpx.get(web.dicomweb + query)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    assert [values(s, "0020000D")[0] for s in response.json()] == [study]
    series = httpx.get(
        f"{web.dicomweb}/studies/{study}/series",
        params={"includefield": "00080021,00080031,0008103E,00200011"},
    )
    assert series.status_code == 200 and len(series.json()) == 2
    fuzzy = httpx.get(web.dicomweb + "/studies", params={"fuzzymatching": "true"})
    assert fuzzy.status_code == 200 and "fuzzymatching" in fuzzy.headers["warning"]
    uid_list = httpx.get(
        web.dicomweb + "/studies",
        params={"StudyInstanceUID": f"{study},{sample.uids('mr1')[0]}"},
    )
    assert len(uid_list.json()) == 2
    assert httpx.get(web.dicomweb + "/studies", params={"PatientID": "nobody"}).json() == []


@pytest.mark.parametrize(
    "query, reason",
    [
        ("NotAnAttribute=1", "unknown query parameter"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("includefield=Bogus", "includefield"),
        ("StudyDate=2020-13-45", "StudyDate"),
        ("fuzzymatching=maybe", "fuzzymatching"),
    ],
)
def test_malformed_queries_get_400_with_a_reason(
    sqlite_web: RunningWeb, query: str, reason: str
) -> None:
    response = httpx.get(f"{sqlite_web.dicomweb}/studies?{query}")
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert httpx.get(f"{sqlite_web.dicomweb}/studies").status_code == 200
