"""Query/retrieve levels and the attributes that belong to each (PS3.4 C.6).

Which attribute lives at which level decides what a C-FIND or QIDO-RS answer at that level
can return, and which index row keeps it.
"""

from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    """A query/retrieve level, spelled as in (0008,0052) QueryRetrieveLevel."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _ORDER.index(self)

    def above(self) -> list[Level]:
        """The levels above this one, top first."""
        return _ORDER[: self.depth]


_ORDER = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE]


class Model(StrEnum):
    """The information model of a query or retrieve."""

    PATIENT_ROOT = "PATIENT_ROOT"
    STUDY_ROOT = "STUDY_ROOT"

    def levels(self) -> list[Level]:
        return _ORDER if self is Model.PATIENT_ROOT else _ORDER[1:]


UNIQUE_KEY: dict[Level, str] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

# Attributes kept on each level's record (the instance level keeps the whole dataset).
# Patient module, Patient Identification, Patient Demographic.
PATIENT_ATTRIBUTES: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientBreedDescription",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
)

# General Study and Patient Study modules.
STUDY_ATTRIBUTES: tuple[str, ...] = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "ProcedureCodeSequence",
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
    "InstitutionName",
    "RequestedProcedureDescription",
    "TimezoneOffsetFromUTC",
)

# General Series module and friends.
SERIES_ATTRIBUTES: tuple[str, ...] = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "Laterality",
    "ProtocolName",
    "OperatorsName",
    "PerformingPhysicianName",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID",
    "RequestAttributesSequence",
    "Manufacturer",
    "ManufacturerModelName",
    "StationName",
    "FrameOfReferenceUID",
)

LEVEL_ATTRIBUTES: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: PATIENT_ATTRIBUTES,
    Level.STUDY: STUDY_ATTRIBUTES,
    Level.SERIES: SERIES_ATTRIBUTES,
}

# Attributes computed from the index, and the level at which each is answered.
COMPUTED_ATTRIBUTES: dict[str, Level] = {
    "NumberOfPatientRelatedStudies": Level.PATIENT,
    "NumberOfPatientRelatedSeries": Level.PATIENT,
    "NumberOfPatientRelatedInstances": Level.PATIENT,
    "NumberOfStudyRelatedSeries": Level.STUDY,
    "NumberOfStudyRelatedInstances": Level.STUDY,
    "ModalitiesInStudy": Level.STUDY,
    "SOPClassesInStudy": Level.STUDY,
    "NumberOfSeriesRelatedInstances": Level.SERIES,
}

# Attributes that are never matched nor returned from the stored record: they describe the
# query itself.
QUERY_CONTROL_ATTRIBUTES = frozenset(
    {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC", "RetrieveAETitle"}
)


def level_of(keyword: str) -> Level:
    """The level whose record holds *keyword* (instance level for anything not listed).

    Examples
    --------
    >>> level_of("PatientName")
    <Level.PATIENT: 'PATIENT'>
    >>> level_of("Rows")
    <Level.IMAGE: 'IMAGE'>
    """
    computed = COMPUTED_ATTRIBUTES.get(keyword)
    if computed is not None:
        return computed
    for level, keywords in LEVEL_ATTRIBUTES.items():
        if keyword in keywords:
            return level
    return Level.IMAGE
