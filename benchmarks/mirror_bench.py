"""Remote PACS mirror benchmark: a real Orthanc holding N one-instance studies, mirrored.

1. An Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb``) on loopback with its own
   folder; N small one-instance studies (8x8 pixels, one patient each, StudyDate spread over
   ten years) are generated and uploaded over its REST API, four at a time. The upload is
   bounded by --max-upload-s: when it runs out, the benchmark goes on with what is there and
   says so. --orthanc-dir keeps the folder so that a second run skips the upload.
2. How long Orthanc itself takes to list every study: ``/tools/find`` (expanded) and QIDO-RS
   ``/dicom-web/studies`` paged by 1000 (as the mirror asks), and one study-level C-FIND.
3. ``Mirror.sync`` into a fresh SQLite index: the first (full) sync, an incremental one with
   nothing new, and an incremental one after 10 new studies dated today; over QIDO-RS, then
   the full sync over C-FIND.

Usage: python benchmarks/mirror_bench.py [--studies 10000] [--max-upload-s 900]
       [--orthanc-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from vesalius.config import RemotePacs, load_settings
from vesalius.container import build
from vesalius.federation.mirror import SERIES_KEYWORDS, Mirror
from vesalius.federation.remote import QidoSource

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_orthanc(folder: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    plugin = next(
        p for d in PLUGIN_DIRS for p in sorted(d.glob("libOrthancDicomWeb.so*")) if p.is_file()
    )
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "mirror-bench",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "Plugins": [str(plugin)],
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowFind": True,
        "SaveJobs": False,
        "LimitFindResults": 0,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen(
        ["/usr/sbin/Orthanc", str(folder / "orthanc.json")], cwd=folder, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/system", timeout=2).status_code == 200:
                return process, url, dicom_port
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("Orthanc did not start; see " + str(folder / "orthanc.log"))
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def study_file(number: int, date: str) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = f"B{number:07d}"
    ds.PatientName = f"BENCH^PATIENT{number}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = date
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"A{number}"
    ds.StudyDescription = "Mirror benchmark"
    ds.Modality = ("CT", "MR", "US", "CR")[number % 4]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(64)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def upload(url: str, first: int, count: int, deadline: float, today: bool = False) -> int:
    start = dt.date(2015, 1, 1)

    def one(number: int) -> bool:
        if time.monotonic() > deadline:
            return False
        date = (
            dt.datetime.now(dt.UTC).date() if today else start + dt.timedelta(days=number % 3650)
        ).strftime("%Y%m%d")
        answer = client.post(f"{url}/instances", content=study_file(number, date))
        answer.raise_for_status()
        return True

    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(4) as pool:
        return sum(pool.map(one, range(first, first + count)))


def orthanc_studies(url: str) -> int:
    return int(httpx.get(f"{url}/statistics", timeout=60).json()["CountStudies"])


def time_orthanc_listing(url: str, dicom_port: int) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    started = time.perf_counter()
    found = httpx.post(
        f"{url}/tools/find", json={"Level": "Study", "Query": {}, "Expand": True}, timeout=600
    ).json()
    out["Orthanc /tools/find (expanded)"] = (time.perf_counter() - started, len(found))
    started = time.perf_counter()
    listed, offset = 0, 0
    uids: list[str] = []
    with httpx.Client(timeout=600) as client:
        while True:
            page = client.get(
                f"{url}/dicom-web/studies",
                params=[("limit", "1000"), ("offset", str(offset))],
                headers={"Accept": "application/dicom+json"},
            ).json()
            listed += len(page)
            offset += len(page)
            uids += [item["0020000D"]["Value"][0] for item in page]
            if len(page) < 1000:
                break
    out["Orthanc QIDO-RS /studies, pages of 1000"] = (time.perf_counter() - started, listed)
    # what the mirror asks next: the series of every study, 40 study UIDs a request
    source = QidoSource(RemotePacs(name="x", dicomweb_url=f"{url}/dicom-web"), timeout_s=600)
    started = time.perf_counter()
    series = source.series_of_studies(uids, SERIES_KEYWORDS)
    source.close()
    out["Orthanc QIDO-RS /series of every study, 40 UIDs a request"] = (
        time.perf_counter() - started,
        len(series),
    )
    from pydicom import Dataset as Query
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    ae = AE(ae_title="BENCH")
    ae.add_requested_context(FIND)
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="ORTHANC")
    query = Query()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientID = ""
    query.StudyDate = ""
    answers = sum(1 for status, ident in assoc.send_c_find(query, FIND) if ident is not None)
    assoc.release()
    out["Orthanc C-FIND, study level"] = (time.perf_counter() - started, answers)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--max-upload-s", type=float, default=900.0)
    parser.add_argument("--orthanc-dir", type=Path, default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mirror-bench-"))
    folder = args.orthanc_dir or tmp / "orthanc"
    process, url, dicom_port = start_orthanc(folder)
    try:
        have = orthanc_studies(url)
        if have < args.studies:
            started = time.monotonic()
            sent = upload(url, have, args.studies - have, started + args.max_upload_s)
            took = time.monotonic() - started
            print(f"uploaded {sent} studies in {took:.1f} s ({sent / took:.0f}/s)")
        total = orthanc_studies(url)
        print(f"Orthanc holds {total} studies")
        rows: list[tuple[str, float, int]] = []
        for what, (seconds, count) in time_orthanc_listing(url, dicom_port).items():
            rows.append((what, seconds, count))

        remotes = (
            f'[{{name = "qido", dicomweb_url = "{url}/dicom-web"}}, '
            f'{{name = "dimse", ae_title = "ORTHANC", host = "127.0.0.1", port = {dicom_port}}}]'
        )
        settings = load_settings(
            env={"VESALIUS_DATA_DIR": str(tmp / "vesalius"), "VESALIUS_REMOTE_PACS": remotes}
        )
        container = build(settings, migrate=True, load_plugins=False)
        mirror = Mirror(settings, container.db, timeout_s=600)
        try:
            first = mirror.sync("qido")
            rows.append(("Vesalius first sync (full), QIDO-RS", first.seconds, first.listed))
            again = mirror.sync("qido")
            rows.append(
                (
                    f"Vesalius incremental sync, nothing new ({again.written} written), QIDO-RS",
                    again.seconds,
                    again.listed,
                )
            )
            upload(url, 10_000_000, 10, time.monotonic() + 120, today=True)
            later = mirror.sync("qido")
            rows.append(
                (
                    f"Vesalius incremental sync, 10 new studies ({later.written} written)",
                    later.seconds,
                    later.listed,
                )
            )
            dimse = mirror.sync("dimse")
            rows.append(("Vesalius first sync (full), C-FIND", dimse.seconds, dimse.listed))
        finally:
            container.close()
        print()
        print("| what | seconds | studies (series) listed | per second |")
        print("| --- | ---: | ---: | ---: |")
        for what, seconds, count in rows:
            rate = count / seconds if seconds else 0
            print(f"| {what} | {seconds:.2f} | {count} | {rate:,.0f} |")
    finally:
        stop(process)
        shutil.rmtree(tmp, ignore_errors=True)  # --orthanc-dir is elsewhere and stays


if __name__ == "__main__":
    main()
