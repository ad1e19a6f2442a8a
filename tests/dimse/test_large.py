"""A multi-frame object over 100 MB over C-STORE and back over C-GET, with DCMTK, into a real
`vesalius serve`: stored byte for byte, and the server's memory never holds it whole."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from dicomgen import make_dataset, write
from serveproc import serve

DCMTK = Path("/usr/bin")
pytestmark = pytest.mark.skipif(not (DCMTK / "storescu").exists(), reason="DCMTK is not installed")

FRAMES = 200  # 200 frames of 512x512 at 16 bits: 104.9 MB of pixel data


def big_file(folder: Path) -> Path:
    ds = make_dataset(Modality="CT")
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = FRAMES
    rng = np.random.default_rng(3)
    ds.PixelData = rng.integers(0, 4096, (FRAMES, 512, 512), dtype=np.uint16).tobytes()
    return write(folder, ds)


def pixel_digest(path: Path) -> str:
    return hashlib.sha256(dcmread(path).PixelData).hexdigest()


def test_a_100_mb_multiframe_object_round_trips_in_bounded_memory(tmp_path: Path) -> None:
    path = big_file(tmp_path / "in")
    assert path.stat().st_size > 100_000_000
    served = serve(
        {
            "VESALIUS_DATA_DIR": str(tmp_path / "data"),
            "VESALIUS_DICOM_HOST": "127.0.0.1",
            "VESALIUS_DICOM_PORT": "0",
            "VESALIUS_HTTP_PORT": "0",
            "VESALIUS_REMOTE_AE": '[{name="getter", ae_title="GETSCU", role="admin"}]',
        }
    )
    try:
        idle = served.reset_peak()  # the start's own peak is above the idle RSS
        address = ["-aec", "VESALIUS", "127.0.0.1", str(served.dicom_port)]
        stored = subprocess.run(
            [str(DCMTK / "storescu"), *address, str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert stored.returncode == 0, stored.stdout + stored.stderr
        peak = served.status_kib("VmHWM")
        # Received fragments go to the spool file as they arrive: far less than the object.
        assert (peak - idle) * 1024 < 40 * 1024 * 1024, (idle, peak)

        out = tmp_path / "out"
        out.mkdir()
        sent = dcmread(path, stop_before_pixels=True)
        got = subprocess.run(
            [str(DCMTK / "getscu"), "-S", "-od", str(out), *address,
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={sent.StudyInstanceUID}"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert got.returncode == 0, got.stdout + got.stderr
        [received] = list(out.iterdir())
        assert pixel_digest(received) == pixel_digest(path)
    finally:
        served.stop()
