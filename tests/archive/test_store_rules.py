"""Store rules: what the archive refuses, with a reason, and the spool path leaving nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from dicomgen import make_file, uid
from dicomgen_raw import with_vr
from vesalius.archive.parse import parse_instance
from vesalius.archive.service import StoreStatus
from vesalius.container import Container
from vesalius.errors import InvalidInstance, SeriesConflict
from vesalius.index.models import Instance, Series, Study

STUDY_UID, SERIES_UID, SOP_UID, CHARSET = 0x0020000D, 0x0020000E, 0x00080018, 0x00080005


def count(container: Container, model: type) -> int:
    with container.db.read() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def leftovers(container: Container) -> list[str]:
    """Temporary files and unindexed blobs: what a refused store must not leave."""
    temporary = [p.name for p in container.blobs.temp_dir.iterdir()]  # type: ignore[attr-defined]
    return temporary + list(container.archive.iter_orphans())


def test_an_instance_naming_another_study_than_its_series_is_refused(
    container: Container,
) -> None:
    study_x, study_y, series = uid(), uid(), uid()
    container.archive.store(make_file(StudyInstanceUID=study_x, SeriesInstanceUID=series))
    intruder = make_file(StudyInstanceUID=study_y, SeriesInstanceUID=series)
    with pytest.raises(SeriesConflict, match=f"archived under study {study_x}") as caught:
        container.archive.store(intruder)
    assert caught.value.uids[2:] == (study_y, series)
    assert (count(container, Study), count(container, Series), count(container, Instance)) == (
        1,
        1,
        1,
    )
    assert leftovers(container) == []
    # and the series' own study keeps taking instances
    more = container.archive.store(make_file(StudyInstanceUID=study_x, SeriesInstanceUID=series))
    assert more.status is StoreStatus.STORED


@pytest.mark.parametrize(
    ("tag", "old", "new", "reason"),
    [
        (STUDY_UID, b"UI", b"ZZ", "StudyInstanceUID (0020,000D) is encoded with VR ZZ"),
        (SOP_UID, b"UI", b"Ui", "SOPInstanceUID (0008,0018) is encoded with VR Ui"),
        (SERIES_UID, b"UI", b"\x01\x02", "SeriesInstanceUID"),
        (CHARSET, b"CS", b"ZZ", "Unknown Value Representation 'ZZ' in tag (0008,0005)"),
        (CHARSET, b"CS", b"\xff\xfe", "not a readable DICOM file"),
        (STUDY_UID, b"UI", b"PN", "StudyInstanceUID (0020,000D) is encoded with VR PN; it must"),
        (SERIES_UID, b"UI", b"LO", "SeriesInstanceUID (0020,000E) is encoded with VR LO"),
        (SOP_UID, b"UI", b"CS", "SOPInstanceUID (0008,0018) is encoded with VR CS"),
        (0x00080016, b"UI", b"DA", "SOPClassUID (0008,0016) is encoded with VR DA"),
    ],
)
def test_unknown_or_wrong_vrs_on_uids_are_refused(
    sqlite_container: Container, tag: int, old: bytes, new: bytes, reason: str
) -> None:
    data = with_vr(make_file(SpecificCharacterSet="ISO_IR 100"), tag, old, new)
    with pytest.raises(InvalidInstance, match=reason.replace("(", r"\(").replace(")", r"\)")):
        sqlite_container.archive.store(data)
    assert count(sqlite_container, Instance) == 0
    assert leftovers(sqlite_container) == []


def test_an_unknown_vr_elsewhere_is_refused_without_a_traceback(
    sqlite_container: Container,
) -> None:
    data = with_vr(make_file(StudyDescription="AB"), 0x00081030, b"LO", b"ZZ")
    with pytest.raises(InvalidInstance, match="cannot be decoded"):
        sqlite_container.archive.store(data)
    assert leftovers(sqlite_container) == []


def test_parsing_stops_before_the_pixel_data_and_still_checks_its_length() -> None:
    data = make_file(rows=64, columns=64)
    parsed = parse_instance(data)
    assert "7FE00010" in parsed.json  # a bulk data URI, never read
    assert parsed.json["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata:7FE00010"}
    # Rows says 64, the pixel data holds 64x32 16-bit pixels: refused though never read
    short = bytearray(data)
    at = short.rfind(b"\xe0\x7f\x10\x00OW")
    short[at + 8 : at + 12] = (64 * 32 * 2).to_bytes(4, "little")
    with pytest.raises(InvalidInstance, match="pixel data is truncated"):
        parse_instance(bytes(short[: at + 12 + 64 * 32 * 2]))


def test_store_spool_consumes_the_spool_in_every_case(sqlite_container: Container) -> None:
    archive = sqlite_container.archive
    data = make_file()
    outcomes = []
    for payload in (data, data, b"garbage" * 100):
        spool = archive.blobs.spool()
        spool.write(payload[:500])
        spool.write(payload[500:])
        try:
            outcomes.append(archive.store_spool(spool, "test").status)
        except InvalidInstance:
            outcomes.append("refused")
        assert not spool.path.exists()
    assert outcomes == [StoreStatus.STORED, StoreStatus.DUPLICATE, "refused"]
    assert leftovers(sqlite_container) == []
    assert count(sqlite_container, Instance) == 1


def test_a_file_without_preamble_is_stored_with_one(sqlite_container: Container) -> None:
    data = make_file()
    outcome = sqlite_container.archive.store(data[128 + 4 :])
    [record] = sqlite_container.archive.instances_of(outcome.study_instance_uid)
    with sqlite_container.archive.open(record) as fh:
        assert fh.read() == data


def test_orphans_are_indexed_when_they_can_be_and_removed_otherwise(
    container: Container,
) -> None:
    archive = container.archive
    kept = archive.store(make_file())
    [record] = archive.instances_of(kept.study_instance_uid)
    with archive.open(record) as fh:
        duplicate = fh.read()
    lost = make_file(PatientID="LOST")
    planted = {
        "dicom/00/00/lost.dcm": lost,  # stored, then the rows never committed
        "dicom/00/00/garbage.dcm": b"not dicom" * 50,
        "dicom/00/00/again.dcm": duplicate,  # its SOP Instance UID is indexed already
    }
    for key, data in planted.items():
        container.blobs.put(key, [data])
    assert sorted(archive.iter_orphans()) == sorted(planted)
    assert list(archive.iter_orphans(min_age=3600)) == []  # too recent to be sure
    reasons = {key: archive.repair_orphan(key) for key in planted}
    assert reasons["dicom/00/00/lost.dcm"] is None
    assert "not indexable" in str(reasons["dicom/00/00/garbage.dcm"])
    assert "indexed with another file" in str(reasons["dicom/00/00/again.dcm"])
    assert list(archive.iter_orphans()) == []
    assert not container.blobs.exists("dicom/00/00/garbage.dcm")
    assert count(container, Instance) == 2
    # A store of the same file afterwards is a duplicate and keeps the adopted file.
    assert archive.store(lost).status is StoreStatus.DUPLICATE
    assert container.blobs.exists("dicom/00/00/lost.dcm")
