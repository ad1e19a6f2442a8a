"""One lookup for find, retrieve and delete: C-GET sends exactly what the same identifier finds.

Keys that are not index columns (ModalitiesInStudy, InstitutionName, Manufacturer, ...) used to
be dropped on retrieve, so a C-GET could send a whole archive that C-FIND said did not match.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from dicomgen import make_dataset, uid
from vesalius.archive.query import build_query
from vesalius.dicom.levels import Level

UID_OF_LEVEL = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


def sample() -> list[Dataset]:
    """Two patients, three studies; study A has a CT and an MR series."""
    a, b, c = uid(), uid(), uid()
    a_ct, a_mr, b_ct, c_mr = uid(), uid(), uid(), uid()

    def ds(study: str, series: str, modality: str, patient: str, **kw: Any) -> Dataset:
        sop = MRImageStorage if modality == "MR" else CTImageStorage
        return make_dataset(
            StudyInstanceUID=study,
            SeriesInstanceUID=series,
            Modality=modality,
            PatientID=patient,
            sop_class=sop,
            **kw,
        )

    north = {"InstitutionName": "North General", "PatientAge": "040Y"}
    return [
        ds(a, a_ct, "CT", "P1", Manufacturer="Acme", InstanceNumber=1, **north),
        ds(a, a_ct, "CT", "P1", Manufacturer="Acme", InstanceNumber=2, **north),
        ds(a, a_mr, "MR", "P1", Manufacturer="Zeta", **north),
        ds(b, b_ct, "CT", "P2", Manufacturer="Acme", InstitutionName="South Clinic"),
        ds(c, c_mr, "MR", "P1", Manufacturer="Zeta", **north),
    ]


def associate(server: Any, *contexts: str, **kwargs: Any) -> Any:
    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for context in contexts:
        ae.add_requested_context(context)
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title, **kwargs)
    assert assoc.is_established
    return assoc


def identifier(level: str, keys: dict[str, str]) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    if UID_OF_LEVEL[level] not in query:
        setattr(query, UID_OF_LEVEL[level], "")
    return query


def c_find(server: Any, level: str, keys: dict[str, str]) -> set[str]:
    assoc = associate(server, StudyRootQueryRetrieveInformationModelFind)
    try:
        answers = list(
            assoc.send_c_find(identifier(level, keys), StudyRootQueryRetrieveInformationModelFind)
        )
    finally:
        assoc.release()
    assert answers[-1][0].Status == 0
    return {str(getattr(a, UID_OF_LEVEL[level])) for s, a in answers if s.Status == 0xFF00}


def c_get(server: Any, level: str, keys: dict[str, str]) -> set[str]:
    received: set[str] = set()

    def on_store(event: Any) -> int:
        received.add(str(event.request.AffectedSOPInstanceUID))
        return 0

    assoc = associate(
        server,
        StudyRootQueryRetrieveInformationModelGet,
        CTImageStorage,
        MRImageStorage,
        ext_neg=[build_role(c, scp_role=True) for c in (CTImageStorage, MRImageStorage)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    try:
        responses = list(
            assoc.send_c_get(identifier(level, keys), StudyRootQueryRetrieveInformationModelGet)
        )
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0
    return received


def under(datasets: list[Dataset], level: str, uids: set[str]) -> set[str]:
    key = UID_OF_LEVEL[level]
    return {str(d.SOPInstanceUID) for d in datasets if str(getattr(d, key)) in uids}


CASES = [
    ("STUDY", {"ModalitiesInStudy": "MR"}, 2),
    ("STUDY", {"Modality": "MR"}, 2),  # read as ModalitiesInStudy at the study level
    ("STUDY", {"ModalitiesInStudy": "CT\\MR"}, 3),
    ("STUDY", {"InstitutionName": "North*"}, 2),  # not an index column
    ("STUDY", {"InstitutionName": "North*", "ModalitiesInStudy": "CT"}, 1),
    ("STUDY", {"PatientAge": "040Y", "PatientID": "P1"}, 2),
    ("SERIES", {"Manufacturer": "Acme"}, 2),
    ("SERIES", {"Manufacturer": "Acme", "InstitutionName": "South*"}, 1),
    ("IMAGE", {"InstitutionName": "North*", "Modality": "CT"}, 2),
    ("STUDY", {"InstitutionName": "Nowhere"}, 0),
]


@pytest.mark.parametrize(("level", "keys", "found"), CASES)
def test_get_sends_what_find_finds(
    sqlite_dicom_server: Any, level: str, keys: dict[str, str], found: int
) -> None:
    datasets = sample()
    for ds in datasets:
        sqlite_dicom_server.archive.store(_bytes(ds))
    matched = c_find(sqlite_dicom_server, level, keys)
    assert len(matched) == found
    assert c_get(sqlite_dicom_server, level, keys) == under(datasets, level, matched)


def test_one_lookup_on_every_database(dicom_server: Any) -> None:
    """The SQL of find and retrieve agree on each backend (ModalitiesInStudy is a subquery)."""
    datasets = sample()
    for ds in datasets:
        dicom_server.archive.store(_bytes(ds))
    archive = dicom_server.archive
    for level, keys, found in CASES:
        query = build_query(Level(level), list(keys.items()))
        matched = {str(r[_tag(UID_OF_LEVEL[level])]["Value"][0]) for r in archive.find(query)}
        assert len(matched) == found, keys
        selected = {r.sop_instance_uid for r in archive.select(query)}
        assert selected == under(datasets, level, matched), keys
    # Delete goes through the same lookup: a study's instances, nothing else.
    study = str(datasets[0].StudyInstanceUID)
    assert archive.delete(study) == 3
    assert archive.totals().instances == 2


def _tag(keyword: str) -> str:
    from vesalius.dicom.dicomjson import tag_key

    return tag_key(keyword)


def _bytes(ds: Dataset) -> bytes:
    from dicomgen import to_bytes

    return to_bytes(ds)
