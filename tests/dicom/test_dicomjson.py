"""DICOM JSON back to datasets: the fast path agrees with pydicom's ``from_json``."""

import warnings

from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from vesalius.dicom.dicomjson import dataset_to_json, to_dataset


def test_to_dataset_matches_pydicom() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm"):
            data = dataset_to_json(dcmread(get_testdata_file(name)))
            plain = {k: v for k, v in data.items() if "BulkDataURI" not in v}
            expected = Dataset.from_json(plain)
            assert to_dataset(data) == expected, name


def test_person_names_and_empty_values() -> None:
    data = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
        "00080050": {"vr": "SH"},
        "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
        "00201208": {"vr": "IS", "Value": [12]},
    }
    ds = to_dataset(data)
    assert str(ds.PatientName) == "DOE^JANE"
    assert ds.AccessionNumber in (None, "")
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert ds.NumberOfStudyRelatedInstances == 12
