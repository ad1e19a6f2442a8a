"""The study record a site pushes to the central index, in seed 004's spelling.

Every push body is untrusted: :func:`parse_records` reads the whole batch first and refuses it
with a :class:`RecordError` naming the record and the field before anything is applied.

Fields (seed 004): ``patient_pk, patient_id, patient_name, study_pk, study_iuid,
study_datetime, study_description, study_modality, study_series, study_instances, center``.
Two optional fields are Vesalius's own: ``deleted`` (``true``: the site no longer holds the
study) and ``seq`` (the site's change sequence number, so that a replayed older record never
overwrites a newer one). Unknown fields are ignored, so older and newer clients interoperate.

Examples
--------
>>> [r] = parse_records({"study_iuid": "1.2.3", "study_datetime": "2024-05-01 13:45:00",
...                      "study_series": "2", "center": "H1"})
>>> r.study_date, r.study_time, r.study_series
('20240501', '134500.000000', 2)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from vesalius.dicom.matching import fold_text

SITE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")

FIELDS = (
    "patient_pk",
    "patient_id",
    "patient_name",
    "study_pk",
    "study_iuid",
    "study_datetime",
    "study_description",
    "study_modality",
    "study_series",
    "study_instances",
    "center",
)

_MAX_TEXT = {
    "patient_pk": 64,
    "patient_id": 64,
    "patient_name": 256,
    "study_pk": 64,
    "study_iuid": 64,
    "study_description": 1024,
    "study_modality": 64,
    "center": 32,
}
_MAX_COUNT = 2**31 - 1
_DATETIME = re.compile(
    r"(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})"
    r"(?:[T ]?(?P<H>\d{2}):?(?P<M>\d{2})(?::?(?P<S>\d{2})(?P<f>\.\d{1,6})?\d*)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?"
)


class RecordError(ValueError):
    """A push body that cannot be applied; the message names the record and the field."""


def check_site_code(value: str) -> str:
    """A site code: 1 to 32 letters, digits, ``_``, ``.`` or ``-``, starting alphanumeric."""
    value = value.strip()
    if not SITE_CODE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a site code: use 1 to 32 letters, digits, '_', '.' or '-'"
        )
    return value


@dataclass(frozen=True)
class StudyRecord:
    """One study as a site reports it, normalised for the index."""

    study_iuid: str
    deleted: bool = False
    seq: int | None = None
    patient_pk: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    study_pk: str | None = None
    study_date: str | None = None  # YYYYMMDD
    study_time: str | None = None  # HHMMSS.FFFFFF
    study_description: str | None = None
    study_modality: str | None = None
    study_series: int | None = None
    study_instances: int | None = None
    center: str | None = None

    @property
    def patient_name_folded(self) -> str | None:
        return fold_text(self.patient_name) if self.patient_name else None

    @property
    def modalities(self) -> str | None:
        """``|CT|MR|``: every modality between bars, so one LIKE finds any of them."""
        names = split_modalities(self.study_modality)
        return "|" + "|".join(names) + "|" if names else None

    def digest(self) -> str:
        """A fingerprint of the record's content, to tell whether it changed."""
        text = json.dumps(self.as_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def as_json(self) -> dict[str, Any]:
        """The record in seed 004's spelling (what a site sends)."""
        data: dict[str, Any] = {
            "patient_pk": self.patient_pk,
            "patient_id": self.patient_id,
            "patient_name": self.patient_name,
            "study_pk": self.study_pk,
            "study_iuid": self.study_iuid,
            "study_datetime": format_datetime(self.study_date, self.study_time),
            "study_description": self.study_description,
            "study_modality": self.study_modality,
            "study_series": self.study_series,
            "study_instances": self.study_instances,
            "center": self.center,
        }
        if self.seq is not None:
            data["seq"] = self.seq
        if self.deleted:
            data = {"study_iuid": self.study_iuid, "center": self.center, "deleted": True}
            if self.seq is not None:
                data["seq"] = self.seq
        return data


def split_modalities(value: str | None) -> list[str]:
    """``CT\\MR``, ``CT,MR`` or ``CT MR`` as ``["CT", "MR"]`` (upper case, no repeats)."""
    if not value:
        return []
    seen: list[str] = []
    for part in re.split(r"[\\,;/ |]+", value.upper()):
        if part and part not in seen:
            seen.append(part)
    return seen


def format_datetime(date: str | None, time: str | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS`` (or the date alone) from DICOM-style parts."""
    if not date:
        return None
    text = f"{date[:4]}-{date[4:6]}-{date[6:8]}"
    if time and len(time) >= 6:
        text += f"T{time[:2]}:{time[2:4]}:{time[4:6]}"
    return text


def parse_datetime(value: str) -> tuple[str | None, str | None]:
    """A study date-time as sent by a site: ISO 8601, SQL (``2024-05-01 13:45:00``) or DICOM DT.

    Examples
    --------
    >>> parse_datetime("20240501134500")
    ('20240501', '134500.000000')
    >>> parse_datetime("2024-05-01")
    ('20240501', None)
    """
    value = value.strip()
    if not value:
        return None, None
    found = _DATETIME.fullmatch(value)
    if not found:
        raise ValueError(
            f"{value!r} is not a date-time: use YYYY-MM-DD HH:MM:SS, ISO 8601 or YYYYMMDDHHMMSS"
        )
    y, m, d = int(found["y"]), int(found["m"]), int(found["d"])
    if not (1 <= m <= 12 and 1 <= d <= 31 and y >= 1800):
        raise ValueError(f"{value!r} is not a valid date")
    date = f"{found['y']}{found['m']}{found['d']}"
    if found["H"] is None:
        return date, None
    hh, mm, ss = int(found["H"]), int(found["M"]), int(found["S"] or 0)
    if hh > 23 or mm > 59 or ss > 60:
        raise ValueError(f"{value!r} is not a valid time of day")
    fraction = ((found["f"] or ".")[1:] + "000000")[:6]
    return date, f"{found['H']}{found['M']}{found['S'] or '00'}.{fraction}"


def _text(item: dict[str, Any], name: str, where: str) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if (
        name in ("patient_pk", "study_pk")
        and isinstance(value, int)
        and not isinstance(value, bool)
    ):
        value = str(value)
    if not isinstance(value, str):
        raise RecordError(f"{where}: {name} must be a string, not {_type(value)}")
    value = value.strip()
    if "\0" in value:
        raise RecordError(f"{where}: {name} contains a NUL character")
    if len(value) > _MAX_TEXT[name]:
        raise RecordError(f"{where}: {name} is longer than {_MAX_TEXT[name]} characters")
    return value or None


def _count(item: dict[str, Any], name: str, where: str) -> int | None:
    value = item.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{where}: {name} must be a whole number, not {_type(value)}")
    if not 0 <= value <= _MAX_COUNT:
        raise RecordError(f"{where}: {name} must be between 0 and {_MAX_COUNT}")
    return value


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return {"list": "an array", "dict": "an object"}.get(type(value).__name__, type(value).__name__)


def parse_record(item: Any, where: str = "record") -> StudyRecord:
    """One record, checked; raises :class:`RecordError` naming the field that is wrong."""
    if not isinstance(item, dict):
        raise RecordError(f"{where} must be a JSON object, not {_type(item)}")
    study_iuid = _text(item, "study_iuid", where)
    if not study_iuid:
        raise RecordError(f"{where}: study_iuid is required")
    if not all(ch.isdigit() or ch == "." for ch in study_iuid):
        raise RecordError(f"{where}: study_iuid {study_iuid!r} is not a UID (digits and dots)")
    deleted = item.get("deleted", False)
    if not isinstance(deleted, bool):
        raise RecordError(f"{where}: deleted must be true or false, not {_type(deleted)}")
    seq = item.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        raise RecordError(f"{where}: seq must be a whole number >= 0, not {_type(seq)}")
    center = _text(item, "center", where)
    raw_datetime = item.get("study_datetime")
    date = time = None
    if raw_datetime is not None:
        if not isinstance(raw_datetime, str):
            raise RecordError(
                f"{where}: study_datetime must be a string, not {_type(raw_datetime)}"
            )
        try:
            date, time = parse_datetime(raw_datetime)
        except ValueError as exc:
            raise RecordError(f"{where}: study_datetime {exc}") from None
    return StudyRecord(
        study_iuid=study_iuid,
        deleted=deleted,
        seq=seq,
        patient_pk=_text(item, "patient_pk", where),
        patient_id=_text(item, "patient_id", where),
        patient_name=_text(item, "patient_name", where),
        study_pk=_text(item, "study_pk", where),
        study_date=date,
        study_time=time,
        study_description=_text(item, "study_description", where),
        study_modality=_text(item, "study_modality", where),
        study_series=_count(item, "study_series", where),
        study_instances=_count(item, "study_instances", where),
        center=center,
    )


def parse_records(body: Any, max_records: int | None = None) -> list[StudyRecord]:
    """A push body (one record or an array of them), every record checked.

    Raises
    ------
    RecordError
        For the first record that is wrong; nothing of the batch may be applied then.
    BatchTooLarge
        When the array holds more than *max_records*.
    """
    if isinstance(body, dict):
        return [parse_record(body)]
    if not isinstance(body, list):
        raise RecordError(f"the body must be a JSON object or an array of them, not {_type(body)}")
    if max_records is not None and len(body) > max_records:
        raise BatchTooLarge(
            f"{len(body)} records in one push; at most {max_records} are accepted per "
            "request: send smaller batches"
        )
    return [parse_record(item, f"record {index}") for index, item in enumerate(body)]


class BatchTooLarge(RecordError):
    """More records than one push may carry (answered with 413)."""
