"""Bulk import of research records: CSV files of subjects and events, and subject export zips.

A CSV file has a header row. ``subject_id`` is required; the other columns are optional:

* subject: ``sex``, ``birth_date`` (YYYY-MM-DD), ``cohort``, ``subject_description``. A subject
  that does not exist is created; for one that does, non-empty subject columns update it.
* event (a row with a ``kind``): ``date``, ``title``, ``description``, ``position``,
  ``session_number``, ``study_instance_uids`` (separated by ``;``), ``allow_pending_links``
  (true/false);
* clinical note: ``note_text``, ``note_author``, ``note_kind``;
* baseline diagnosis: ``height_cm``, ``weight_kg``, ``heart_rate_bpm``, ``systolic_bp_mmhg``,
  ``diastolic_bp_mmhg``, ``diagnosis``, and any ``diagnosis.<name>`` column into its extra
  fields;
* auxiliary file (kind ``aux_file``): ``file``, a path relative to the CSV, and ``media_type``;
* heart model (kind ``heart_model``): ``model_data`` and ``model_metadata``, paths relative to
  the CSV.

Each row stands alone: a refused row is reported with its line and reason, and the others go on.
A zip file is a subject export (``vesalius records export``) and is imported whole or not at
all. A folder is searched for both, recursively; there, a zip without a ``manifest.json`` (a
heart model a CSV names) is not taken for an export.
"""

from __future__ import annotations

import csv
import datetime as dt
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vesalius.errors import NotFound, VesaliusError
from vesalius.records.export import MANIFEST, import_subject
from vesalius.records.schemas import (
    DiagnosisIn,
    EventIn,
    EventKind,
    NoteIn,
    SubjectIn,
    SubjectPatch,
)
from vesalius.records.service import Records, Upload

SUBJECT_COLUMNS = {"sex", "birth_date", "cohort", "subject_description"}
EVENT_COLUMNS = {
    "kind",
    "date",
    "title",
    "description",
    "position",
    "session_number",
    "study_instance_uids",
    "allow_pending_links",
}
NOTE_COLUMNS = {"note_text", "note_author", "note_kind"}
DIAGNOSIS_COLUMNS = {
    "height_cm",
    "weight_kg",
    "heart_rate_bpm",
    "systolic_bp_mmhg",
    "diastolic_bp_mmhg",
    "diagnosis",
}
UPLOAD_COLUMNS = {"file", "media_type", "model_data", "model_metadata"}
KNOWN = (
    {"subject_id"}
    | SUBJECT_COLUMNS
    | EVENT_COLUMNS
    | NOTE_COLUMNS
    | DIAGNOSIS_COLUMNS
    | UPLOAD_COLUMNS
)


@dataclass
class BulkReport:
    subjects_created: int = 0
    subjects_updated: int = 0
    events_added: int = 0
    subjects_imported: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Unit:
    """One piece of work: a CSV row or an export zip."""

    label: str
    path: Path
    row: dict[str, str] | None = None


def discover(paths: list[Path], report: BulkReport) -> Iterator[Unit]:
    """The CSV rows and export zips under *paths*; unreadable files go to the report."""
    for path in paths:
        if not path.exists():
            report.rejected.append((str(path), "no such file or folder"))
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            suffix = file.suffix.lower()
            if suffix == ".zip":
                # In a folder, other zips (a heart model a CSV names) are not exports.
                if not path.is_dir() or _is_export(file):
                    yield Unit(str(file), file)
            elif suffix == ".csv":
                yield from _csv_units(file, report)
            elif not path.is_dir():
                report.rejected.append((str(file), "neither a .csv nor a subject export .zip"))


def _is_export(file: Path) -> bool:
    try:
        with zipfile.ZipFile(file) as archive:
            return MANIFEST in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _csv_units(file: Path, report: BulkReport) -> Iterator[Unit]:
    try:
        with file.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            unknown = [c for c in columns if c not in KNOWN and not c.startswith("diagnosis.")]
            if "subject_id" not in columns:
                report.rejected.append((str(file), "no subject_id column"))
                return
            if unknown:
                report.rejected.append(
                    (str(file), f"unknown column(s): {', '.join(unknown)} (see the CSV format)")
                )
                return
            rows = [
                {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        report.rejected.append((str(file), f"cannot read the CSV file: {exc}"))
        return
    for line, row in enumerate(rows, 2):
        yield Unit(f"{file}:{line}", file, row)


def run(
    records: Records, units: list[Unit], report: BulkReport, advance: Callable[[], None]
) -> None:
    for unit in units:
        try:
            if unit.row is None:
                with unit.path.open("rb") as fh:
                    import_subject(records, fh)
                report.subjects_imported += 1
            else:
                import_row(records, unit.path.parent, unit.row, report)
        except ValidationError as exc:
            report.rejected.append((unit.label, _validation_message(exc)))
        except (VesaliusError, ValueError, OSError) as exc:
            report.rejected.append((unit.label, str(exc)))
        advance()


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors()[:5]
    )


def _opt(row: dict[str, str], name: str) -> str | None:
    return row.get(name) or None


def import_row(records: Records, base: Path, row: dict[str, str], report: BulkReport) -> None:
    """Create or update the row's subject, then add its event if it names a kind.

    The row is checked before anything is written, and a subject created for a row whose
    event is then refused is removed again: a refused row leaves nothing behind.
    """
    subject_values = {
        "sex": _opt(row, "sex"),
        "birth_date": _opt(row, "birth_date"),
        "cohort": _opt(row, "cohort"),
        "description": _opt(row, "subject_description"),
    }
    subject_id = row.get("subject_id", "")
    given = {k: v for k, v in subject_values.items() if v is not None}
    add_event = _event_writer(records, base, subject_id, row)  # checks the row first
    try:
        records.get_subject(subject_id)
    except NotFound:
        records.create_subject(SubjectIn(subject_id=subject_id, **given))
        created = True
    else:
        created = False
        if given:
            records.update_subject(subject_id, SubjectPatch(**given))
    if add_event is not None:
        try:
            add_event()
        except BaseException:
            if created:
                records.delete_subject(subject_id)
            raise
        report.events_added += 1
    if created:
        report.subjects_created += 1
    elif given:
        report.subjects_updated += 1


def _event_writer(
    records: Records, base: Path, subject_id: str, row: dict[str, str]
) -> Callable[[], Any] | None:
    """A function adding the row's event, after checking what can be checked without writing."""
    kind = _opt(row, "kind")
    if kind is None:
        return None
    try:
        day = dt.date.fromisoformat(row.get("date") or "")
    except ValueError:
        raise ValueError(f"date {row.get('date')!r} is not a date (YYYY-MM-DD)") from None
    position = int(row["position"]) if row.get("position") else None
    title, description = _opt(row, "title"), _opt(row, "description")
    if kind == EventKind.AUX_FILE:
        path = _relative(base, row, "file")

        def add_file() -> Any:
            with path.open("rb") as fh:
                upload = Upload(fh, path.name, _opt(row, "media_type"))
                return records.add_file(
                    subject_id,
                    upload,
                    day,
                    title=title,
                    description=description,
                    position=position,
                )

        return add_file
    if kind == EventKind.HEART_MODEL:
        data_path = _relative(base, row, "model_data")
        xml_path = _relative(base, row, "model_metadata")

        def add_model() -> Any:
            with data_path.open("rb") as data, xml_path.open("rb") as xml:
                return records.add_model(
                    subject_id,
                    Upload(data, data_path.name),
                    Upload(xml, xml_path.name),
                    day,
                    title=title,
                    description=description,
                    position=position,
                    allow_pending_links=_truthy(row.get("allow_pending_links")),
                )

        return add_model
    event = _event_in(kind, day, position, row)
    return lambda: records.add_event(subject_id, event)


def _event_in(kind: str, day: dt.date, position: int | None, row: dict[str, str]) -> EventIn:
    note = None
    if kind == EventKind.CLINICAL_NOTE:
        if not row.get("note_text"):
            raise ValueError("a clinical_note row needs its note_text")
        note = NoteIn(
            text=row.get("note_text", ""),
            author=_opt(row, "note_author"),
            note_kind=_opt(row, "note_kind"),
        )
    diagnosis = None
    if kind == EventKind.BASELINE_DIAGNOSIS:
        values: dict[str, Any] = {c: _opt(row, c) for c in DIAGNOSIS_COLUMNS}
        extra = {k.split(".", 1)[1]: v for k, v in row.items() if k.startswith("diagnosis.") and v}
        diagnosis = DiagnosisIn(**values, extra=extra)
    uids = [u.strip() for u in (row.get("study_instance_uids") or "").split(";") if u.strip()]
    return EventIn(
        kind=kind,
        date=day,
        position=position,
        title=_opt(row, "title"),
        description=_opt(row, "description"),
        session_number=int(row["session_number"]) if row.get("session_number") else None,
        note=note,
        diagnosis=diagnosis,
        study_instance_uids=uids,
        allow_pending_links=_truthy(row.get("allow_pending_links")),
    )


def _relative(base: Path, row: dict[str, str], column: str) -> Path:
    value = row.get(column)
    if not value:
        raise ValueError(f"the {column} column is empty")
    path = (base / value).resolve()
    if not path.is_file():
        raise ValueError(f"{column} {value!r}: no such file next to the CSV")
    return path


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "y"}
