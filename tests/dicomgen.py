"""Synthetic DICOM files for the tests: small, valid, with the attributes a test chooses."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

ROOT = "1.2.826.0.1.3680043.10.1383."


def uid() -> str:
    return generate_uid(prefix=ROOT)


def make_dataset(
    *,
    rows: int = 16,
    columns: int = 16,
    transfer_syntax: str = ExplicitVRLittleEndian,
    sop_class: str = CTImageStorage,
    seed: int = 0,
    **attributes: Any,
) -> Dataset:
    """A CT-like instance with small 16-bit pixel data; keyword arguments override attributes."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid()
    ds.StudyInstanceUID = uid()
    ds.SeriesInstanceUID = uid()
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "PID0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC0001"
    ds.StudyID = "1"
    ds.StudyDescription = "Test study"
    ds.ReferringPhysicianName = "REF^DOCTOR"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Axial"
    ds.BodyPartExamined = "CHEST"
    ds.InstanceNumber = 1
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    for key, value in attributes.items():
        setattr(ds, key, value)
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 4095, (rows, columns), dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return buffer.getvalue()


def make_file(**kwargs: Any) -> bytes:
    return to_bytes(make_dataset(**kwargs))


def write(folder: Path, ds: Dataset, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{ds.SOPInstanceUID}.dcm")
    path.write_bytes(to_bytes(ds))
    return path
