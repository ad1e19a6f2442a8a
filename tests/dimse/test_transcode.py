"""C-GET and C-MOVE to peers that accept only compressed syntaxes: encoded, pixel for pixel."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomgen import make_dataset, uid, write
from ports import free_port
from vesalius.config import RemoteAE

DCMTK = Path("/usr/bin")


def _study(count: int = 2) -> list[Dataset]:
    study = uid()
    out = []
    for n in range(count):
        ds = make_dataset(StudyInstanceUID=study, InstanceNumber=n + 1, seed=n, rows=64, columns=48)
        out.append(ds)
    return out


def _store(server: Any, datasets: list[Dataset], folder: Path) -> None:
    files = [write(folder, ds) for ds in datasets]
    subprocess.run(
        [str(DCMTK / "storescu"), "-aec", server.ae_title, server.host, str(server.port), *files],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _get(server: Any, study_uid: str, syntaxes: list[str]) -> tuple[list[tuple[str, Dataset]], Any]:
    received: list[tuple[str, Dataset]] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append((str(event.context.transfer_syntax), ds))
        return 0x0000

    ae = AE(ae_title="GETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, syntaxes)
    assoc = ae.associate(
        server.host,
        server.port,
        ae_title=server.ae_title,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        statuses = [
            s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    return received, statuses[-1]


@pytest.mark.parametrize(
    "syntax", [JPEGLSLossless, JPEG2000Lossless, RLELossless], ids=lambda s: UID(s).keyword
)
def test_c_get_to_a_peer_that_takes_only_one_compressed_syntax(
    sqlite_dicom_server: Any, tmp_path: Path, syntax: str
) -> None:
    sent = _study()
    _store(sqlite_dicom_server, sent, tmp_path / "in")
    received, final = _get(sqlite_dicom_server, str(sent[0].StudyInstanceUID), [syntax])
    assert int(final.Status) == 0x0000
    assert sorted(ts for ts, _ in received) == [syntax, syntax]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sent}
    for _, ds in received:
        assert np.array_equal(ds.pixel_array, by_uid[str(ds.SOPInstanceUID)].pixel_array)


def test_c_get_asking_only_for_a_lossy_syntax_fails_each_instance_cleanly(
    sqlite_dicom_server: Any, tmp_path: Path
) -> None:
    sent = _study()
    _store(sqlite_dicom_server, sent, tmp_path / "in")
    received, final = _get(sqlite_dicom_server, str(sent[0].StudyInstanceUID), [JPEGLSNearLossless])
    assert received == []
    assert int(final.Status) in (0xA702, 0xB000)  # sub-operations failed
    assert final.NumberOfFailedSuboperations == 2
    # Still serving: the same study in JPEG-LS lossless works.
    received, final = _get(sqlite_dicom_server, str(sent[0].StudyInstanceUID), [JPEGLSLossless])
    assert len(received) == 2 and int(final.Status) == 0


def _move(
    server: Any, study_uid: str, syntaxes: list[str], title: str
) -> tuple[list[tuple[str, Dataset]], Any]:
    """C-MOVE a study to a new peer *title* that accepts CT only in *syntaxes*."""
    received: list[tuple[str, Dataset]] = []

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append((str(event.context.transfer_syntax), ds))
        return 0x0000

    dest = AE(ae_title=title)
    dest.add_supported_context(CTImageStorage, syntaxes)
    port = free_port()
    peer = dest.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        settings = server.container.settings
        settings.remote_ae = [
            *settings.remote_ae,
            RemoteAE(name=title.lower(), ae_title=title, host="127.0.0.1", port=port),
        ]
        ae = AE(ae_title="MOVESCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        try:
            statuses = [
                s
                for s, _ in assoc.send_c_move(
                    query, title, StudyRootQueryRetrieveInformationModelMove
                )
            ]
        finally:
            assoc.release()
    finally:
        peer.shutdown()
    return received, statuses[-1]


def test_c_move_to_a_peer_that_takes_only_jpeg_2000(
    sqlite_dicom_server: Any, tmp_path: Path
) -> None:
    sent = _study()
    _store(sqlite_dicom_server, sent, tmp_path / "in")
    received, final = _move(
        sqlite_dicom_server, str(sent[0].StudyInstanceUID), [JPEG2000Lossless], "J2KONLY"
    )
    assert int(final.Status) == 0x0000
    assert sorted(ts for ts, _ in received) == [JPEG2000Lossless] * 2
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sent}
    for _, ds in received:
        assert np.array_equal(ds.pixel_array, by_uid[str(ds.SOPInstanceUID)].pixel_array)
    # Uncompressed peers are still sent uncompressed (no needless encoding).
    received_plain, _ = _get(
        sqlite_dicom_server, str(sent[0].StudyInstanceUID), [ExplicitVRLittleEndian, JPEGLSLossless]
    )
    assert {ts for ts, _ in received_plain} == {ExplicitVRLittleEndian}


def test_c_move_to_a_lossy_only_peer_follows_transcode_lossy(
    sqlite_dicom_server: Any, tmp_path: Path
) -> None:
    """Lossy encoding only where the site allows it (``transcode_lossy``), as for C-GET."""
    sent = _study()
    _store(sqlite_dicom_server, sent, tmp_path / "in")
    study_uid = str(sent[0].StudyInstanceUID)
    received, final = _move(sqlite_dicom_server, study_uid, [JPEGLSNearLossless], "NEARONLY")
    assert received == []  # the peer refuses every context Vesalius may propose
    assert int(final.Status) & 0xF000 == 0xA000 and "NEARONLY" in final.ErrorComment

    settings = sqlite_dicom_server.container.settings
    settings.transcode_lossy = True
    try:
        received, final = _move(sqlite_dicom_server, study_uid, [JPEGLSNearLossless], "NEARONLY2")
    finally:
        settings.transcode_lossy = False
    assert int(final.Status) == 0x0000
    assert sorted(ts for ts, _ in received) == [JPEGLSNearLossless] * 2
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sent}
    for _, ds in received:
        original = by_uid[str(ds.SOPInstanceUID)].pixel_array.astype(np.int32)
        assert np.abs(ds.pixel_array.astype(np.int32) - original).max() <= 10
