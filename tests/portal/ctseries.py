"""A synthetic CT series that looks like one to a viewer: a phantom whose disc grows per slice."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dicomgen import make_dataset, to_bytes, uid


def ct_series(
    count: int, size: int = 256, patient_id: str = "CT0001", name: str = "Müller^José"
) -> Iterator[bytes]:
    """*count* CT images of one series (Part 10 bytes), positioned and spaced."""
    study, series, frame = uid(), uid(), uid()
    y, x = np.mgrid[:size, :size]
    r2 = (x - size / 2) ** 2 + (y - size / 2) ** 2
    for i in range(count):
        radius = size * (0.15 + 0.3 * i / max(1, count - 1))
        pixels = np.where(r2 < radius**2, 1024 + 200 + (x % 32) * 4, 24).astype(np.uint16)
        ds = make_dataset(
            rows=size,
            columns=size,
            PatientID=patient_id,
            PatientName=name,
            StudyInstanceUID=study,
            SeriesInstanceUID=series,
            FrameOfReferenceUID=frame,
            InstanceNumber=i + 1,
            ImagePositionPatient=[0.0, 0.0, float(i) * 2.0],
            ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            PixelSpacing=[0.8, 0.8],
            SliceThickness=2.0,
            StudyDescription="Chest CT",
            SeriesDescription="Axial 2mm",
        )
        ds.PixelData = pixels.tobytes()
        yield to_bytes(ds)
