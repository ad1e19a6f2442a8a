"""The HTTP server on an ephemeral port, and a small archive to query, for DICOMweb tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pydicom import Dataset
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from authhelp import url_with_credentials
from dicomgen import make_dataset, to_bytes, uid
from httpserver import running_app
from vesalius.container import Container


@dataclass
class RunningWeb:
    """A running HTTP server and the archive behind it."""

    url: str
    container: Container

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def public_dicomweb(self) -> str:
        """The DICOMweb root as the server names it in its answers (without credentials)."""
        return re.sub(r"//[^@/]*@", "//", self.dicomweb)

    @property
    def archive(self):  # type: ignore[no-untyped-def]
        return self.container.archive


def serve(container: Container) -> Iterator[RunningWeb]:
    """Run the app on 127.0.0.1:0 until the generator is closed."""
    with running_app(container) as url:
        # Every route needs credentials: an admin API token as HTTP Basic, from the URL.
        yield RunningWeb(url_with_credentials(url, container), container)


@pytest.fixture
def web(container: Container) -> Iterator[RunningWeb]:
    """The HTTP server on each database backend."""
    yield from serve(container)


@pytest.fixture
def sqlite_web(sqlite_container: Container) -> Iterator[RunningWeb]:
    """The HTTP server on the embedded database only."""
    yield from serve(sqlite_container)


@dataclass
class Sample:
    """What :func:`load_sample` stored: datasets by name and their stored bytes."""

    datasets: dict[str, Dataset] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def uids(self, name: str) -> tuple[str, str, str]:
        ds = self.datasets[name]
        return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def load_sample(container: Container) -> Sample:
    """Two patients, three studies: CT explicit VR (2 series), MR implicit VR, and RLE.

    - ``ct1``, ``ct2`` (series A) and ``ct3`` (series B): DOE^JOHN, study 2024-01-02, CT
    - ``mr1``: DOE^JANE, study 2023-05-06, MR, implicit VR little endian
    - ``rle1``: DOE^JANE, a second study, 2 frames, RLE lossless
    """
    sample = Sample()
    study1, series_a, series_b = uid(), uid(), uid()
    john = {"PatientID": "P1", "PatientName": "DOE^JOHN", "StudyInstanceUID": study1}
    # 32x32x2 bytes: above the inline limit, so its pixel data is a BulkDataURI.
    sample.datasets["ct1"] = make_dataset(
        rows=32, columns=32, SeriesInstanceUID=series_a, InstanceNumber=1, **john
    )
    sample.datasets["ct2"] = make_dataset(
        SeriesInstanceUID=series_a, InstanceNumber=2, seed=1, **john
    )
    sample.datasets["ct3"] = make_dataset(
        SeriesInstanceUID=series_b, SeriesNumber=2, Modality="CT", seed=2, **john
    )
    jane = {"PatientID": "P2", "PatientName": "DOE^JANE"}
    sample.datasets["mr1"] = make_dataset(
        Modality="MR",
        StudyDate="20230506",
        StudyDescription="Brain",
        AccessionNumber="ACC0002",
        transfer_syntax=ImplicitVRLittleEndian,
        **jane,
    )
    rle = make_dataset(rows=8, columns=8, StudyDate="20220101", AccessionNumber="ACC0003", **jane)
    import numpy as np

    frames = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8) * 7
    rle.NumberOfFrames = 2
    rle.PixelData = frames.tobytes()
    rle.compress(RLELossless, frames)
    sample.datasets["rle1"] = rle
    for name, ds in sample.datasets.items():
        data = to_bytes(ds)
        container.archive.store(data, origin="test")
        sample.files[name] = data
    return sample
