"""Many associations at once, from DCMTK's storescu: nothing lost, nothing stored twice."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from dicomgen import make_dataset, uid, write

STORESCU = Path("/usr/bin/storescu")
pytestmark = pytest.mark.skipif(not STORESCU.exists(), reason="DCMTK is not installed")


def test_eight_associations_storing_overlapping_studies(dicom_server: Any, tmp_path: Path) -> None:
    """8 storescu processes at once; every instance is sent by two of them, into 3 studies
    that share a patient, so that rows are created concurrently at every level."""
    files: list[Path] = []
    for s in range(3):
        study = uid()
        series = [uid() for _ in range(2)]
        for i in range(16):
            ds = make_dataset(
                PatientID="OVERLAP",
                StudyInstanceUID=study,
                SeriesInstanceUID=series[i % 2],
                InstanceNumber=i + 1,
            )
            files.append(write(tmp_path / f"s{s}", ds))
    shares = [files[i::4] for i in range(4)]
    batches = shares + [list(reversed(share)) for share in shares]  # each file sent twice
    processes = [
        subprocess.Popen(
            [
                str(STORESCU),
                "-nh",
                "-aec",
                dicom_server.ae_title,
                dicom_server.host,
                str(dicom_server.port),
                *map(str, batch),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for batch in batches
    ]
    for process in processes:
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, output
        assert "Failed" not in output and "Error" not in output, output
    totals = dicom_server.archive.totals()
    assert (totals.patients, totals.studies, totals.series, totals.instances) == (1, 3, 6, 48)
    for study_files in (files[:16], files[16:32], files[32:]):
        from pydicom import dcmread

        first = dcmread(study_files[0])
        records = dicom_server.archive.instances_of(str(first.StudyInstanceUID))
        assert len(records) == 16
        assert len({r.sop_instance_uid for r in records}) == 16
