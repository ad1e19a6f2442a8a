"""Store rules over C-STORE: refusals with the standard status and the reason, no traceback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from dicomgen import make_dataset, make_file, uid
from dicomgen_raw import with_vr


def send(server: Any, *items: Any) -> list[Any]:
    """C-STORE each dataset or file (files are sent as they are, not re-encoded)."""
    ae = AE(ae_title="RULES")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(item) for item in items]
    finally:
        assoc.release()


def leftovers(server: Any) -> list[str]:
    container = server.container
    return [p.name for p in container.blobs.temp_dir.iterdir()] + list(
        container.archive.iter_orphans()
    )


def test_an_instance_naming_another_study_than_its_series_is_refused(dicom_server: Any) -> None:
    series, study_x, study_y = uid(), uid(), uid()
    first = make_dataset(StudyInstanceUID=study_x, SeriesInstanceUID=series)
    intruder = make_dataset(StudyInstanceUID=study_y, SeriesInstanceUID=series)
    ok, refused = send(dicom_server, first, intruder)
    assert ok.Status == 0x0000
    assert refused.Status == 0xA900
    assert "archived under study" in refused.ErrorComment
    assert dicom_server.archive.totals().instances == 1
    assert leftovers(dicom_server) == []


@pytest.mark.parametrize(
    ("tag", "old", "new", "reason"),
    [
        (0x0020000D, b"UI", b"ZZ", "StudyInstanceUID (0020,000D) is enc"),
        (0x00080018, b"UI", b"Ui", "SOPInstanceUID (0008,0018) is encod"),
        (0x00080005, b"CS", b"ZZ", "Unknown Value Representation 'ZZ'"),
        (0x0020000E, b"UI", b"PN", "SeriesInstanceUID (0020,000E) is en"),
        (0x0020000D, b"UI", b"DA", "StudyInstanceUID (0020,000D) is enc"),
    ],
)
def test_unknown_and_wrong_vrs_get_c000_with_the_reason(
    sqlite_dicom_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tag: int,
    old: bytes,
    new: bytes,
    reason: str,
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the bytes as they are
    path = tmp_path / "mangled.dcm"
    path.write_bytes(with_vr(make_file(SpecificCharacterSet="ISO_IR 100"), tag, old, new))
    good = tmp_path / "good.dcm"
    good.write_bytes(make_file())
    with caplog.at_level(logging.WARNING):
        refused, ok = send(sqlite_dicom_server, path, good)
    assert refused.Status == 0xC000
    assert reason in refused.ErrorComment
    assert ok.Status == 0x0000
    assert sqlite_dicom_server.archive.totals().instances == 1
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]
    assert leftovers(sqlite_dicom_server) == []
