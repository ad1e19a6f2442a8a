"""Identifier schemes: which research subject (and follow-up session) a DICOM PatientID is.

Examples
--------
>>> derive_subject("XYZ0001502", SubjectIdScheme.CAP)
SubjectRef(subject_id='XYZ00015', session=2)
>>> derive_subject("XYZ0001502", SubjectIdScheme.PATIENT_ID)
SubjectRef(subject_id='XYZ0001502', session=None)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vesalius.config import SubjectIdScheme

log = logging.getLogger(__name__)

CAP_ID_LENGTH = 10
CAP_SUBJECT_LENGTH = 8


@dataclass(frozen=True)
class SubjectRef:
    """A subject identifier and, where the scheme has one, the follow-up session number."""

    subject_id: str
    session: int | None


def derive_subject(patient_id: str | None, scheme: SubjectIdScheme) -> SubjectRef | None:
    """The subject a PatientID belongs to, or None when there is no PatientID.

    Under the CAP scheme an ID that is not 10 characters ending in two digits is taken whole
    (a subject without a session number) rather than refused: the study is archived either
    way, and refusing images over a research naming rule would lose data.
    """
    value = (patient_id or "").strip()[:64]
    if not value:
        return None
    if scheme is SubjectIdScheme.CAP:
        if len(value) == CAP_ID_LENGTH and value[CAP_SUBJECT_LENGTH:].isdigit():
            return SubjectRef(value[:CAP_SUBJECT_LENGTH], int(value[CAP_SUBJECT_LENGTH:]))
        log.info("PatientID %r is not a CAP ID; used whole as the subject", value)
    return SubjectRef(value, None)
