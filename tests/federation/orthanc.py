"""A real Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb``) for the tests: its own
temporary configuration, storage and index, HTTP and DICOM on loopback ephemeral ports,
stopped by its PID."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ports import free_port

BINARY = Path("/usr/sbin/Orthanc")
PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def _plugin() -> Path | None:
    for folder in PLUGIN_DIRS:
        for candidate in sorted(folder.glob("libOrthancDicomWeb.so*")):
            if candidate.is_file():
                return candidate
    return None


@dataclass
class Orthanc:
    url: str
    dicom_port: int
    aet: str = "ORTHANC"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def store(self, data: bytes) -> None:
        answer = httpx.post(f"{self.url}/instances", content=data, timeout=30)
        assert answer.status_code == 200, answer.text

    def delete_study(self, study_uid: str) -> None:
        found = httpx.post(f"{self.url}/tools/lookup", content=study_uid, timeout=30).json()
        [study] = [f for f in found if f["Type"] == "Study"]
        assert httpx.delete(f"{self.url}/studies/{study['ID']}", timeout=30).status_code == 200


@contextmanager
def running_orthanc(workdir: Path) -> Iterator[Orthanc]:
    plugin = _plugin()
    if not BINARY.exists() or plugin is None:
        pytest.skip(
            "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
        )
    folder = workdir / "orthanc"
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "vesalius-test",
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
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowGet": True,
        "SaveJobs": False,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }
    (folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [str(BINARY), str(folder / "orthanc.json")], cwd=folder, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/system", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "Orthanc did not start: "
                    + (folder / "orthanc.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.2)
        yield Orthanc(url, dicom_port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
