"""The shapes of research records going in and out: the service's vocabulary and the API's JSON."""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_KIND = r"^[a-z][a-z0-9_]{0,31}$"
# Subject IDs are path segments of the API: no slash, backslash or control characters.
_SUBJECT_ID = r"^[^/\\\x00-\x1f\x7f]{1,64}$"


class EventKind(StrEnum):
    """The built-in kinds of timeline event; a site may name others (``gp_visit``, ...)."""

    IMAGING_SESSION = "imaging_session"
    CLINICAL_NOTE = "clinical_note"
    AUX_FILE = "aux_file"
    HEART_MODEL = "heart_model"
    BASELINE_DIAGNOSIS = "baseline_diagnosis"


UPLOAD_KINDS = {EventKind.AUX_FILE.value, EventKind.HEART_MODEL.value}


def check_uid(value: str) -> str:
    value = value.strip()
    if len(value) > 64 or not _UID.match(value):
        raise ValueError(f"{value!r} is not a DICOM UID (digits and dots, at most 64)")
    return value


# -- subjects -----------------------------------------------------------------------------------


class SubjectFields(BaseModel):
    model_config = {"extra": "forbid"}

    sex: str | None = Field(default=None, max_length=16, examples=["F"])
    birth_date: dt.date | None = None
    cohort: str | None = Field(default=None, max_length=64, description="Study group or site.")
    description: str | None = Field(default=None, max_length=60_000)
    extra: dict[str, Any] | None = Field(
        default=None, description="Anything else about the subject, as a JSON object."
    )


class SubjectIn(SubjectFields):
    subject_id: str = Field(pattern=_SUBJECT_ID, examples=["XYZ00015"])

    @field_validator("subject_id")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the subject ID is empty")
        return value


class SubjectPatch(SubjectFields):
    """Fields to change; fields left out keep their value, ``null`` clears one."""


class SubjectOut(BaseModel):
    subject_id: str
    sex: str | None
    birth_date: dt.date | None
    cohort: str | None
    description: str | None
    extra: dict[str, Any]
    event_count: int
    study_count: int = Field(description="Studies linked from the subject's events.")
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


class SubjectPage(BaseModel):
    items: list[SubjectOut]
    total: int
    offset: int
    limit: int


# -- event parts --------------------------------------------------------------------------------


class NoteIn(BaseModel):
    model_config = {"extra": "forbid"}

    text: str = Field(min_length=1, max_length=10_000_000)
    author: str | None = Field(default=None, max_length=256)
    note_kind: str | None = Field(default=None, max_length=64, examples=["echo report"])


class DiagnosisIn(BaseModel):
    """The usual measures as typed fields; any other measure goes into ``extra``."""

    model_config = {"extra": "forbid"}

    height_cm: float | None = Field(default=None, gt=0, lt=300)
    weight_kg: float | None = Field(default=None, gt=0, lt=1000)
    heart_rate_bpm: int | None = Field(default=None, gt=0, lt=400)
    systolic_bp_mmhg: int | None = Field(default=None, gt=0, lt=400)
    diastolic_bp_mmhg: int | None = Field(default=None, gt=0, lt=400)
    diagnosis: str | None = Field(default=None, max_length=60_000)
    extra: dict[str, Any] = Field(default_factory=dict)


class LinkOut(BaseModel):
    study_instance_uid: str
    present: bool = Field(description="Whether the study is in the archive now.")


class LinkIn(BaseModel):
    model_config = {"extra": "forbid"}

    study_instance_uid: str
    allow_pending: bool = Field(
        default=False,
        description=(
            "Accept a study that is not (yet) in the archive; the link then reads "
            "present=false until the study arrives. Without it such a link is refused."
        ),
    )

    _uid = field_validator("study_instance_uid")(check_uid)


class BlobOut(BaseModel):
    filename: str
    media_type: str
    size: int
    sha256: str


class ModelOut(BaseModel):
    name: str | None
    version: str | None
    frames: int | None
    fields: dict[str, Any] = Field(description="Everything the model's XML declares.")
    data: BlobOut
    metadata: BlobOut


# -- events -------------------------------------------------------------------------------------


class EventFields(BaseModel):
    model_config = {"extra": "forbid"}

    title: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=10_000_000)
    session_number: int | None = Field(default=None, ge=0)


class EventIn(EventFields):
    kind: str = Field(
        pattern=_KIND,
        description=(
            "imaging_session, clinical_note, baseline_diagnosis or a site's own kind "
            "(gp_visit, cath_lab, ...). Files and heart models are uploaded at their own "
            "endpoints."
        ),
    )
    date: dt.date
    position: int | None = Field(
        default=None, ge=0, description="Place among the events of the same date; default last."
    )
    note: NoteIn | None = None
    diagnosis: DiagnosisIn | None = None
    study_instance_uids: list[str] = Field(default_factory=list, max_length=1000)
    allow_pending_links: bool = Field(
        default=False, description="Accept links to studies not (yet) in the archive."
    )

    _uids = field_validator("study_instance_uids")(
        lambda values: list(dict.fromkeys(check_uid(v) for v in values))
    )

    @model_validator(mode="after")
    def _parts_match_kind(self) -> EventIn:
        if self.kind in UPLOAD_KINDS:
            where = "files" if self.kind == EventKind.AUX_FILE else "models"
            raise ValueError(
                f"{self.kind} events are created by uploading to /api/subjects/{{id}}/{where}"
            )
        if (self.kind == EventKind.CLINICAL_NOTE) != (self.note is not None):
            raise ValueError("a clinical_note event needs a note, and only it may have one")
        if (self.kind == EventKind.BASELINE_DIAGNOSIS) != (self.diagnosis is not None):
            raise ValueError(
                "a baseline_diagnosis event needs a diagnosis, and only it may have one"
            )
        return self


class EventPatch(EventFields):
    """Fields to change. A new ``date`` or ``position`` moves the event in the timeline."""

    date: dt.date | None = None
    position: int | None = Field(default=None, ge=0)
    note: NoteIn | None = None
    diagnosis: DiagnosisIn | None = None


class EventOut(BaseModel):
    id: int
    subject_id: str
    kind: str
    date: dt.date
    position: int = Field(description="Place among the events of the same date, from 0.")
    prev_id: int | None = Field(description="The previous event of the timeline.")
    next_id: int | None = Field(description="The next event of the timeline.")
    title: str | None
    description: str | None
    session_number: int | None
    links: list[LinkOut]
    note: NoteIn | None = None
    diagnosis: DiagnosisIn | None = None
    file: BlobOut | None = None
    model: ModelOut | None = None
    created_at: dt.datetime | None = None


class ImportOut(BaseModel):
    subject: SubjectOut
    events: int
    instances_stored: int
    instances_already_present: int
