"""The DIMSE server against DCMTK's real clients: echoscu, storescu, findscu, getscu, movescu."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import ImplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from dicomgen import make_dataset, uid, write
from ports import free_port
from vesalius.archive.query import build_query
from vesalius.config import RemoteAE
from vesalius.dicom.levels import Level

DCMTK = Path("/usr/bin")
pytestmark = pytest.mark.skipif(
    not (DCMTK / "storescu").exists(), reason="DCMTK is not installed (apt-get install dcmtk)"
)


def dcmtk(tool: str, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(DCMTK / tool), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{tool} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


def address(server) -> list[str]:  # type: ignore[no-untyped-def]
    return ["-aec", server.ae_title, server.host, str(server.port)]


def sample_files(folder: Path) -> dict[str, Path]:
    """One study of three instances: explicit VR, implicit VR and RLE; another of JPEG."""
    study, series = uid(), uid()
    explicit = make_dataset(StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=1)
    implicit = make_dataset(
        StudyInstanceUID=study,
        SeriesInstanceUID=series,
        InstanceNumber=2,
        transfer_syntax=ImplicitVRLittleEndian,
    )
    rle = make_dataset(StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=3)
    rle.compress(RLELossless)
    jpeg = make_dataset(PatientID="PJPEG", PatientName="JPEG^ONLY", Modality="MG")
    jpeg.BitsAllocated, jpeg.BitsStored, jpeg.HighBit = 8, 8, 7
    # Not a real JPEG stream: storing must keep whatever arrived without decoding it.
    jpeg.PixelData = encapsulate([b"\xff\xd8fake-jpeg-frame\xff\xd9"])
    jpeg["PixelData"].VR = "OB"
    jpeg.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return {
        "explicit": write(folder, explicit),
        "implicit": write(folder, implicit),
        "rle": write(folder, rle),
        "jpeg": write(folder, jpeg),
    }


PROPOSE = {"rle": "-xr", "jpeg": "-xy"}


def store_all(server, files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    """Send each file with storescu proposing its own syntax (storescu offers one codec a run)."""
    for name, path in files.items():
        dcmtk("storescu", PROPOSE.get(name, "-x="), *address(server), path)


def test_echo(dicom_server) -> None:  # type: ignore[no-untyped-def]
    result = dcmtk("echoscu", "-v", *address(dicom_server))
    assert "Received Echo Response (Success)" in result.stderr + result.stdout


def test_store_find_get_round_trip(dicom_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = sample_files(tmp_path / "in")
    store_all(dicom_server, files)

    # Each instance is archived with the dataset exactly as sent, in its own syntax.
    for path in files.values():
        sent = dcmread(path)
        [record] = dicom_server.archive.instances_of(
            str(sent.StudyInstanceUID), None, str(sent.SOPInstanceUID)
        )
        assert record.transfer_syntax_uid == sent.file_meta.TransferSyntaxUID
        with dicom_server.archive.open(record) as fh:
            stored = dcmread(fh)
        assert stored == sent
        assert stored.PixelData == sent.PixelData

    # C-FIND, study root, study level, wildcard on the name.
    out = tmp_path / "find"
    out.mkdir()
    dcmtk(
        "findscu", "-S", "-X", "-od", out, *address(dicom_server),
        "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=test*",
        "-k", "StudyInstanceUID", "-k", "NumberOfStudyRelatedInstances",
        "-k", "ModalitiesInStudy",
    )  # fmt: skip
    responses = [dcmread(p) for p in sorted(out.iterdir())]
    assert len(responses) == 1
    study_uid = dcmread(files["explicit"]).StudyInstanceUID
    assert responses[0].StudyInstanceUID == study_uid
    assert responses[0].NumberOfStudyRelatedInstances == 3
    assert responses[0].ModalitiesInStudy == "CT"

    # C-GET of that study brings back the three instances, pixel data unchanged.
    got = tmp_path / "get"
    got.mkdir()
    dcmtk(
        "getscu", "-S", "-od", got, *address(dicom_server),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
    )  # fmt: skip
    received = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in got.iterdir()}
    sent = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in files.values()}
    assert set(received) == {k for k, v in sent.items() if v.StudyInstanceUID == study_uid}
    for sop, ds in received.items():
        assert ds.pixel_array.tolist() == sent[sop].pixel_array.tolist()


def test_find_at_every_level_in_both_models(sqlite_dicom_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = sample_files(tmp_path / "in")
    store_all(sqlite_dicom_server, files)
    cases = [
        ("-P", "PATIENT", ["PatientID", "NumberOfPatientRelatedStudies"], 2),
        ("-P", "STUDY", ["PatientID=PJPEG", "StudyInstanceUID"], 1),
        ("-S", "SERIES", ["Modality=CT", "SeriesInstanceUID"], 1),
        ("-S", "IMAGE", ["SOPInstanceUID", "InstanceNumber=2"], 1),
    ]
    for model, level, keys, expected in cases:
        out = tmp_path / f"find-{level}"
        out.mkdir()
        args = [a for k in keys for a in ("-k", k)]
        dcmtk("findscu", model, "-X", "-od", out, *address(sqlite_dicom_server),
              "-k", f"QueryRetrieveLevel={level}", *args)  # fmt: skip
        assert len(list(out.iterdir())) == expected, level


def test_move_to_a_configured_destination(sqlite_dicom_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = sample_files(tmp_path / "in")
    store_all(sqlite_dicom_server, files)
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    storescp = subprocess.Popen(
        [str(DCMTK / "storescp"), "-aet", "DEST", "-od", str(received), "+xa", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        settings = sqlite_dicom_server.container.settings
        settings.remote_ae = [
            *settings.remote_ae,
            RemoteAE(name="dest", ae_title="DEST", host="127.0.0.1", port=port),
        ]
        for _ in range(50):  # storescp needs a moment to listen
            if (
                dcmtk("echoscu", "-aec", "DEST", "127.0.0.1", str(port), check=False).returncode
                == 0
            ):
                break
        jpeg_study = dcmread(files["jpeg"]).StudyInstanceUID
        dcmtk("movescu", "-S", "-aem", "DEST", *address(sqlite_dicom_server),
              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={jpeg_study}")  # fmt: skip
        [arrived] = list(received.iterdir())
        ds = dcmread(arrived)
        assert ds.PixelData == dcmread(files["jpeg"]).PixelData
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit  # sent as stored
    finally:
        storescp.terminate()
        storescp.wait(10)


def test_move_to_an_unknown_destination_is_refused(sqlite_dicom_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = sample_files(tmp_path / "in")
    store_all(sqlite_dicom_server, files)
    result = dcmtk("movescu", "-v", "-S", "-aem", "NOWHERE", *address(sqlite_dicom_server),
                   "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PJPEG", check=False)  # fmt: skip
    output = result.stdout + result.stderr
    assert "0xa801" in output.lower() or "MoveDestinationUnknown" in output
    dcmtk("echoscu", *address(sqlite_dicom_server))  # still serving


def test_move_to_a_destination_that_is_down_performs_no_sub_operation(
    sqlite_dicom_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A configured destination nobody answers at: 0xA702 (unable to perform sub-operations)
    with every instance failed, not 0xA801, which says the destination is not configured."""
    files = sample_files(tmp_path / "in")
    store_all(sqlite_dicom_server, files)
    port = free_port()  # a port nothing listens on
    settings = sqlite_dicom_server.container.settings
    settings.remote_ae = [
        *settings.remote_ae,
        RemoteAE(name="down", ae_title="DOWN", host="127.0.0.1", port=port),
    ]
    jpeg_study = dcmread(files["jpeg"]).StudyInstanceUID
    result = dcmtk("movescu", "-d", "-S", "-aem", "DOWN", *address(sqlite_dicom_server),
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={jpeg_study}",
                   check=False)  # fmt: skip
    output = (result.stdout + result.stderr).lower()
    assert "0xa702" in output, output
    assert "cannot reach down" in output
    assert "number of failed suboperations" in output or "failed sub" in output, output
    dcmtk("echoscu", *address(sqlite_dicom_server))  # still serving


def test_storescu_survives_a_bad_file_among_good_ones(sqlite_dicom_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    bad = make_dataset(PatientID="BAD")
    bad.StudyInstanceUID = ""
    bad_path = write(folder, bad, "bad.dcm")
    good_path = write(folder, make_dataset(PatientID="GOOD"), "good.dcm")
    # The bad file goes first; -nh keeps storescu going after a refused store.
    result = dcmtk(
        "storescu", "-v", "-nh", *address(sqlite_dicom_server), bad_path, good_path, check=False
    )
    output = (result.stdout + result.stderr).lower()
    assert "store response (error: cannotunderstand)" in output, output
    totals = sqlite_dicom_server.archive.totals()
    assert (totals.patients, totals.instances) == (1, 1)
    [study] = sqlite_dicom_server.archive.find(build_query(Level.STUDY, [("PatientID", "GOOD")]))
    assert study
    dcmtk("echoscu", *address(sqlite_dicom_server))  # and the server goes on
