"""The fast DICOM JSON encoder gives exactly what pydicom gives."""

from __future__ import annotations

import warnings

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.dataelem import DataElement

from dicomgen import make_dataset
from vesalius.dicom.fastjson import dataset_json


def bulk(element: DataElement) -> str:
    return f"bulk:{element.tag:08X}"


def files() -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted(get_testdata_files("*"))


def test_same_as_pydicom_on_its_test_files() -> None:
    compared = 0
    for path in files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                expected = dcmread(path).to_json_dict(1024, bulk)
            except Exception:
                continue  # not a file pydicom itself can encode
            assert dataset_json(dcmread(path), 1024, bulk) == expected, path
        compared += 1
    assert compared >= 50


@pytest.mark.parametrize("charset", ["ISO_IR 192", "ISO_IR 100", "ISO_IR 144"])
def test_character_sets(charset: str) -> None:
    ds = make_dataset(
        SpecificCharacterSet=charset,
        PatientName="Иванов^Пётр" if charset != "ISO_IR 100" else "Müller^Jörg",
        StudyDescription="Щ" if charset != "ISO_IR 100" else "é",
    )
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    expected = dcmread(io.BytesIO(buffer.getvalue())).to_json_dict(1024, bulk)
    assert dataset_json(dcmread(io.BytesIO(buffer.getvalue())), 1024, bulk) == expected
