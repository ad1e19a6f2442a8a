"""A 1 GiB STOW-RS part goes through a real `vesalius serve` without raising its memory."""

from __future__ import annotations

import hashlib
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx

from dicomgen import make_dataset, make_file, to_bytes
from serveproc import api_token, serve

from .test_stow import BOUNDARY, CONTENT_TYPE, body

MIB = 1024 * 1024
FRAMES = 2048  # 512 x 512 x 16 bits = 512 KiB a frame: 1 GiB of pixel data


def big_instance_header() -> bytes:
    """A Part 10 file up to the pixel data's value: 2048 frames of 512x512 16-bit pixels."""
    ds = make_dataset(rows=1, columns=1)
    del ds.PixelData
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = FRAMES
    head = to_bytes(ds)
    return head + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", FRAMES * 512 * 512 * 2)


def test_a_1_gib_part_is_stored_in_bounded_memory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {
        "VESALIUS_DATA_DIR": str(data_dir),
        "VESALIUS_DICOM_PORT": "0",
        "VESALIUS_HTTP_PORT": "0",
        "VESALIUS_DICOM_HOST": "127.0.0.1",
    }
    token = api_token(env)
    served = serve(env)
    try:
        with httpx.Client(timeout=900, headers={"Authorization": f"Bearer {token}"}) as client:
            warm = client.post(
                f"{served.dicomweb}/studies",
                content=body(make_file()),
                headers={"Content-Type": CONTENT_TYPE},
            )
            assert warm.status_code == 200, warm.text
            idle = served.reset_peak()  # the start's own peak is above the idle RSS
            header = big_instance_header()
            frame = bytes(range(256)) * (2 * 1024)  # 512 KiB, sent again and again
            digest = hashlib.sha256()

            def stream() -> Iterator[bytes]:
                yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                yield header
                digest.update(header)
                for _ in range(FRAMES):
                    digest.update(frame)
                    yield frame
                yield f"\r\n--{BOUNDARY}--\r\n".encode()

            response = client.post(
                f"{served.dicomweb}/studies",
                content=stream(),
                headers={"Content-Type": CONTENT_TYPE},
            )
            assert response.status_code == 200, response.text
            peak = served.status_kib("VmHWM")
        growth_mib = (peak - idle) / 1024
        (tmp_path / "memory.txt").write_text(f"idle RSS {idle} KiB, peak {peak} KiB\n")
        assert growth_mib < 100, f"peak memory rose {growth_mib:.0f} MiB for a 1 GiB part"
    finally:
        served.stop()
    stored = [p for p in (data_dir / "storage" / "dicom").rglob("*.dcm") if p.stat().st_size > MIB]
    assert len(stored) == 1
    assert stored[0].stat().st_size == len(header) + FRAMES * len(frame)
    with open(stored[0], "rb") as fh:
        check = hashlib.sha256()
        while chunk := fh.read(8 * MIB):
            check.update(chunk)
    assert check.hexdigest() == digest.hexdigest()
    assert list((data_dir / "storage" / ".tmp").iterdir()) == []
    shutil.rmtree(data_dir)  # 1 GiB: do not leave it in pytest's kept temporary folders
