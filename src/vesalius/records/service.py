"""The records service: subjects, their timeline, notes, files, heart models and study links.

Every protocol (the JSON API, the command line, the index hook of the archive) calls this class.
Writes follow the archive's order: blobs first (fsync'd by the store), then the rows in one
transaction, and the blobs are removed again when the rows cannot be written. Removals go the
other way: rows first, then blobs, so a crash can leave an unreferenced blob but never a row
pointing at nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vesalius.archive.service import Archive
from vesalius.config import Settings
from vesalius.dicom import dicomjson
from vesalius.dicom.dicomjson import DicomJson, first_string
from vesalius.errors import Conflict, NotFound
from vesalius.events import SubjectChanged
from vesalius.index import records as sql
from vesalius.index.engine import Database
from vesalius.index.records_models import Event, Subject
from vesalius.records import files as filemod
from vesalius.records.errors import InvalidRecord, TooLarge
from vesalius.records.heart_models import ModelMetadata, parse_metadata
from vesalius.records.safezip import ZipLimits, check_zip
from vesalius.records.schemas import (
    BlobOut,
    DiagnosisIn,
    EventIn,
    EventKind,
    EventOut,
    EventPatch,
    LinkIn,
    LinkOut,
    ModelOut,
    NoteIn,
    SubjectIn,
    SubjectOut,
    SubjectPage,
    SubjectPatch,
)
from vesalius.records.subjects import derive_subject
from vesalius.storage.base import BlobInfo, BlobStore

log = logging.getLogger(__name__)

ModelPart = Literal["data", "metadata"]


@dataclass(frozen=True)
class StoredBlob:
    """A records blob to stream back: what it is and where it lives."""

    info: BlobOut
    key: str


@dataclass(frozen=True)
class Upload:
    """An uploaded file as the service takes it: a readable stream and what the client said."""

    stream: IO[bytes]
    filename: str | None = None
    media_type: str | None = None


def _dicom_date(value: str | None) -> dt.date | None:
    """A DICOM DA value (YYYYMMDD) as a date; None when it is none (strptime costs 50 µs)."""
    text = (value or "").strip()[:8]
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


class Records:
    """Research records around each subject, beside the archive's images."""

    def __init__(self, settings: Settings, db: Database, blobs: BlobStore, archive: Archive):
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.archive = archive

    # -- subjects ------------------------------------------------------------------------------

    def list_subjects(
        self, filters: sql.SubjectFilters, offset: int = 0, limit: int = 50
    ) -> SubjectPage:
        with self.db.read() as session:
            rows, total = sql.list_subjects(session, filters, offset, limit)
            counts = sql.subject_counts(session, [r.id for r in rows])
        items = [_subject_out(r, counts.get(r.id, (0, 0))) for r in rows]
        return SubjectPage(items=items, total=total, offset=offset, limit=limit)

    def get_subject(self, subject_id: str) -> SubjectOut:
        with self.db.read() as session:
            subject = self.subject_row(session, subject_id)
            counts = sql.subject_counts(session, [subject.id])
        return _subject_out(subject, counts[subject.id])

    def create_subject(self, data: SubjectIn) -> SubjectOut:
        values = data.model_dump(exclude={"extra"})
        values["extra"] = dicomjson.dumps(data.extra or {})
        try:
            with self.db.write() as session:
                sql.insert_subject(session, values)
        except IntegrityError:
            raise Conflict(f"subject {data.subject_id} already exists") from None
        self._changed(data.subject_id, "created")
        return self.get_subject(data.subject_id)

    def update_subject(self, subject_id: str, patch: SubjectPatch) -> SubjectOut:
        values = {name: getattr(patch, name) for name in patch.model_fields_set}
        if "extra" in values:
            values["extra"] = dicomjson.dumps(values["extra"] or {})
        with self.db.write() as session:
            subject = self.subject_row(session, subject_id, lock=True)
            sql.update_subject(session, subject.id, values)
        self._changed(subject_id, "updated")
        return self.get_subject(subject_id)

    def delete_subject(self, subject_id: str) -> None:
        """Remove the subject's record (events, notes, files, models); its DICOM studies stay
        in the archive (delete them there)."""
        with self.db.write() as session:
            subject = self.subject_row(session, subject_id, lock=True)
            keys = sql.subject_blob_keys(session, subject.id)
            sql.delete_subject(session, subject.id)
        self.discard(keys)
        self._changed(subject_id, "deleted")

    def _changed(self, subject_id: str, action: str) -> None:
        """Announce a committed change of a subject (``SubjectChanged``)."""
        self.archive.events.publish(SubjectChanged(subject_id, action))

    @staticmethod
    def subject_row(session: Session, subject_id: str, *, lock: bool = False) -> Subject:
        subject = sql.get_subject(session, subject_id, lock=lock)
        if subject is None:
            raise NotFound(f"no subject {subject_id!r}")
        return subject

    # -- the timeline --------------------------------------------------------------------------

    def timeline(self, subject_id: str, kind: str | None = None) -> list[EventOut]:
        """The subject's events in order; with *kind*, only those (neighbours stay the
        timeline's)."""
        with self.db.read() as session:
            subject = self.subject_row(session, subject_id)
            order = sql.ordered_event_ids(session, subject.id)
            rows = sql.load_events(session, order)
        events = _with_neighbours(order, rows, subject_id)
        return [e for e in events if kind is None or e.kind == kind]

    def get_event(self, subject_id: str, event_id: int) -> EventOut:
        with self.db.read() as session:
            subject = self.subject_row(session, subject_id)
            order = sql.ordered_event_ids(session, subject.id)
            if event_id not in order:
                raise NotFound(f"subject {subject_id} has no event {event_id}")
            rows = sql.load_events(session, [event_id])
        index = order.index(event_id)
        prev_id = order[index - 1] if index > 0 else None
        next_id = order[index + 1] if index + 1 < len(order) else None
        return _event_out(rows[event_id], subject_id, prev_id, next_id)

    def add_event(self, subject_id: str, data: EventIn) -> EventOut:
        """Add a note, a diagnosis, an imaging session or a site's own kind of event."""
        with self.db.write() as session:
            subject = self.subject_row(session, subject_id, lock=True)
            self._check_studies(session, data.study_instance_uids, data.allow_pending_links)
            event_id = sql.insert_event(
                session,
                subject.id,
                {
                    "kind": data.kind,
                    "event_date": data.date,
                    "title": data.title,
                    "description": data.description,
                    "session_number": data.session_number,
                },
                data.position,
            )
            if data.note is not None:
                sql.put_note(session, event_id, data.note.model_dump())
            if data.diagnosis is not None:
                sql.put_diagnosis(session, event_id, data.diagnosis.model_dump())
            for uid in data.study_instance_uids:
                sql.add_link(session, event_id, uid)
        return self.get_event(subject_id, event_id)

    def update_event(self, subject_id: str, event_id: int, patch: EventPatch) -> EventOut:
        """Change an event; a new date or position moves it (others on the dates shift)."""
        given = patch.model_fields_set
        with self.db.write() as session:
            subject = self.subject_row(session, subject_id, lock=True)
            event = self._event(session, subject, event_id)
            plain = {n: getattr(patch, n) for n in ("title", "description", "session_number")}
            sql.update_event(session, event.id, {n: v for n, v in plain.items() if n in given})
            if "note" in given:
                if event.kind != EventKind.CLINICAL_NOTE or patch.note is None:
                    raise InvalidRecord("only a clinical_note event has a note, and it needs one")
                sql.put_note(session, event.id, patch.note.model_dump())
            if "diagnosis" in given:
                if event.kind != EventKind.BASELINE_DIAGNOSIS or patch.diagnosis is None:
                    raise InvalidRecord(
                        "only a baseline_diagnosis event has a diagnosis, and it needs one"
                    )
                sql.put_diagnosis(session, event.id, patch.diagnosis.model_dump())
            if ("date" in given and patch.date is not None) or "position" in given:
                day = patch.date or event.event_date
                sql.move_event(session, event, day, patch.position)
        return self.get_event(subject_id, event_id)

    def delete_event(self, subject_id: str, event_id: int) -> None:
        with self.db.write() as session:
            subject = self.subject_row(session, subject_id, lock=True)
            event = self._event(session, subject, event_id)
            keys = sql.event_blob_keys(session, event.id)
            sql.delete_event(session, event)
        self.discard(keys)

    @staticmethod
    def _event(session: Session, subject: Subject, event_id: int) -> Event:
        event = sql.get_event(session, subject.id, event_id)
        if event is None:
            raise NotFound(f"subject {subject.subject_id} has no event {event_id}")
        return event

    # -- study links ---------------------------------------------------------------------------

    def add_link(self, subject_id: str, event_id: int, link: LinkIn) -> EventOut:
        with self.db.write() as session:
            subject = self.subject_row(session, subject_id, lock=True)
            event = self._event(session, subject, event_id)
            self._check_studies(session, [link.study_instance_uid], link.allow_pending)
            sql.add_link(session, event.id, link.study_instance_uid)
        return self.get_event(subject_id, event_id)

    def remove_link(self, subject_id: str, event_id: int, study_uid: str) -> EventOut:
        with self.db.write() as session:
            subject = self.subject_row(session, subject_id, lock=True)
            event = self._event(session, subject, event_id)
            if not sql.remove_link(session, event.id, study_uid):
                raise NotFound(f"event {event_id} has no link to study {study_uid}")
        return self.get_event(subject_id, event_id)

    @staticmethod
    def _check_studies(session: Session, uids: Sequence[str], allow_pending: bool) -> None:
        if allow_pending:
            return
        missing = [uid for uid in uids if not sql.study_exists(session, uid)]
        if missing:
            raise InvalidRecord(
                f"study {', '.join(missing)} is not in the archive; store it first, or link "
                "it anyway with allow_pending (the link then reads present=false until it "
                "arrives)"
            )

    # -- auxiliary files -----------------------------------------------------------------------

    def add_file(
        self,
        subject_id: str,
        upload: Upload,
        day: dt.date,
        *,
        title: str | None = None,
        description: str | None = None,
        position: int | None = None,
    ) -> EventOut:
        """Store a file (streamed, size-limited) as a new ``aux_file`` event."""
        self.get_subject(subject_id)  # a 404 before reading the upload
        filename = filemod.clean_filename(upload.filename, "file")
        media_type = filemod.media_type_for(filename, upload.media_type)
        limit = self.settings.max_aux_file_bytes
        chunks = filemod.limited_chunks(upload.stream, limit, "the file", "max_aux_file_bytes")
        blob = self.blobs.put(filemod.new_key("files"), chunks)

        def write(session: Session, event_id: int) -> None:
            sql.add_file(
                session,
                event_id,
                {
                    "filename": filename,
                    "media_type": media_type,
                    "size": blob.size,
                    "sha256": blob.sha256,
                    "blob_key": blob.key,
                },
            )

        values = {"kind": EventKind.AUX_FILE.value, "event_date": day, "title": title or filename}
        values["description"] = description
        event_id = self._insert_with_blobs(subject_id, values, position, [blob], write)
        return self.get_event(subject_id, event_id)

    def file_of(self, subject_id: str, event_id: int) -> StoredBlob:
        event = self._loaded(subject_id, event_id)
        if event.file is None:
            raise NotFound(f"event {event_id} of subject {subject_id} has no file")
        return StoredBlob(_blob_out(event.file), event.file.blob_key)

    # -- heart models --------------------------------------------------------------------------

    @property
    def zip_limits(self) -> ZipLimits:
        return ZipLimits(
            max_uncompressed=self.settings.zip_max_uncompressed_bytes,
            max_members=self.settings.zip_max_members,
            max_ratio=self.settings.zip_max_ratio,
        )

    def check_model(self, data: IO[bytes], xml: IO[bytes]) -> tuple[bytes, ModelMetadata]:
        """Check a heart model before anything is stored; returns the XML and what it says.

        *data* must be seekable; it is left at its start.
        """
        xml_bytes = filemod.read_limited(
            xml,
            self.settings.max_heart_model_xml_bytes,
            "the heart model XML",
            "max_heart_model_xml_bytes",
        )
        meta = parse_metadata(xml_bytes)
        data.seek(0, 2)
        size = data.tell()
        if size > self.settings.max_heart_model_bytes:
            raise TooLarge(
                f"the heart model zip is larger than {self.settings.max_heart_model_bytes} "
                "bytes, the limit (max_heart_model_bytes)"
            )
        data.seek(0)
        check_zip(data, self.zip_limits, "the heart model zip")
        data.seek(0)
        return xml_bytes, meta

    def add_model(
        self,
        subject_id: str,
        data: Upload,
        xml: Upload,
        day: dt.date,
        *,
        title: str | None = None,
        description: str | None = None,
        position: int | None = None,
        allow_pending_links: bool = False,
    ) -> EventOut:
        """Store a heart model (checked zip + XML) as a new ``heart_model`` event, linked to
        the studies its XML names."""
        self.get_subject(subject_id)
        xml_bytes, meta = self.check_model(data.stream, xml.stream)
        with self.db.read() as session:
            self._check_studies(session, meta.study_uids, allow_pending_links)
        data_name = filemod.clean_filename(data.filename, "model.zip")
        xml_name = filemod.clean_filename(xml.filename, "model.xml")
        stored: list[BlobInfo] = []
        try:
            stored.append(
                self.blobs.put(
                    filemod.new_key("models", ".zip"),
                    filemod.limited_chunks(
                        data.stream,
                        self.settings.max_heart_model_bytes,
                        "the heart model zip",
                        "max_heart_model_bytes",
                    ),
                )
            )
            stored.append(self.blobs.put(filemod.new_key("models", ".xml"), [xml_bytes]))
        except BaseException:
            self.discard([b.key for b in stored])
            raise
        zip_blob, xml_blob = stored

        def write(session: Session, event_id: int) -> None:
            sql.add_heart_model(
                session,
                event_id,
                model_values(meta, data_name, zip_blob, xml_name, xml_blob),
                meta.field_pairs(),
            )
            for uid in meta.study_uids:
                sql.add_link(session, event_id, uid)

        values = {
            "kind": EventKind.HEART_MODEL.value,
            "event_date": day,
            "title": title or meta.name or data_name,
            "description": description,
        }
        event_id = self._insert_with_blobs(subject_id, values, position, stored, write)
        return self.get_event(subject_id, event_id)

    def model_part(self, subject_id: str, event_id: int, part: ModelPart) -> StoredBlob:
        event = self._loaded(subject_id, event_id)
        if event.model is None:
            raise NotFound(f"event {event_id} of subject {subject_id} is not a heart model")
        out = _model_out(event.model)
        if part == "data":
            return StoredBlob(out.data, event.model.data_key)
        return StoredBlob(out.metadata, event.model.xml_key)

    def search_models(
        self,
        *,
        name: str | None = None,
        version: str | None = None,
        fields: Sequence[tuple[str, str]] = (),
        study_uid: str | None = None,
        subject_id: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[EventOut]:
        """Heart models whose metadata matches every condition given."""
        with self.db.read() as session:
            found = sql.find_heart_models(
                session,
                name=name,
                version=version,
                fields=fields,
                study_uid=study_uid,
                subject_id=subject_id,
                offset=offset,
                limit=limit,
            )
        return [self.get_event(s, e) for s, e in found]

    # -- shared write paths --------------------------------------------------------------------

    def _insert_with_blobs(
        self,
        subject_id: str,
        values: dict[str, Any],
        position: int | None,
        blobs: Sequence[BlobInfo],
        write: Callable[[Session, int], None],
    ) -> int:
        """Insert an event and its parts in one transaction; remove *blobs* if it fails."""
        try:
            with self.db.write() as session:
                subject = self.subject_row(session, subject_id, lock=True)
                event_id = sql.insert_event(session, subject.id, values, position)
                write(session, event_id)
        except BaseException:
            self.discard([b.key for b in blobs])
            raise
        return event_id

    def _loaded(self, subject_id: str, event_id: int) -> sql.EventRow:
        with self.db.read() as session:
            subject = self.subject_row(session, subject_id)
            if sql.get_event(session, subject.id, event_id) is None:
                raise NotFound(f"subject {subject_id} has no event {event_id}")
            return sql.load_events(session, [event_id])[event_id]

    def open_blob(self, key: str) -> BinaryIO:
        return self.blobs.open(key)

    def discard(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self.blobs.delete(key)
            except OSError:
                log.exception("could not remove blob %s; `vesalius doctor` will list it", key)

    # -- from the archive ----------------------------------------------------------------------

    def on_instance_indexed(self, session: Session, data: DicomJson) -> None:
        """Index hook: the subject of an arriving instance exists afterwards, and its study is
        an imaging session of the subject's timeline (numbered where the scheme has one).

        Runs inside the archive's write transaction, so it commits or fails with the instance.
        """
        ref = derive_subject(first_string(data, "PatientID"), self.settings.subject_id_scheme)
        study_uid = (first_string(data, "StudyInstanceUID") or "").strip()
        if ref is None or not study_uid:
            return
        if sql.session_event_for_study(session, study_uid) is not None:
            return  # the usual case: another instance of a study already seen
        sex = (first_string(data, "PatientSex") or "").strip()[:16] or None
        defaults = {
            "sex": sex,
            "birth_date": _dicom_date(first_string(data, "PatientBirthDate")),
            "extra": "{}",
        }
        subject_pk, _ = sql.get_or_create_subject(session, ref.subject_id, defaults)
        sql.lock_subject(session, subject_pk)
        day = _dicom_date(first_string(data, "StudyDate")) or dt.date.today()
        description = (first_string(data, "StudyDescription") or "").strip()
        if ref.session is not None:
            title = f"Imaging session {ref.session}" + (f": {description}" if description else "")
        else:
            title = description or "Imaging session"
        sql.insert_session_event(
            session,
            subject_pk,
            {
                "kind": EventKind.IMAGING_SESSION.value,
                "event_date": day,
                "title": title[:256],
                "session_number": ref.session,
            },
            study_uid,
        )

    def sync_from_index(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Give every archived study without an imaging session its subject and session (after
        an upgrade from an archive without records); returns the number of studies seen."""
        with self.db.read() as session:
            studies = sql.imaging_studies(session)
        for number, data in enumerate(studies, 1):
            with self.db.write() as session:
                self.on_instance_indexed(session, data)
            if progress is not None:
                progress(number, len(studies))
        return len(studies)


# -- conversions --------------------------------------------------------------------------------


def _subject_out(subject: Subject, counts: tuple[int, int]) -> SubjectOut:
    return SubjectOut(
        subject_id=subject.subject_id,
        sex=subject.sex,
        birth_date=subject.birth_date,
        cohort=subject.cohort,
        description=subject.description,
        extra=dicomjson.loads(subject.extra or "{}"),
        event_count=counts[0],
        study_count=counts[1],
        created_at=subject.created_at,
        updated_at=subject.updated_at,
    )


def _blob_out(part: Any) -> BlobOut:
    return BlobOut(
        filename=part.filename, media_type=part.media_type, size=part.size, sha256=part.sha256
    )


def model_values(
    meta: ModelMetadata, data_name: str, data: BlobInfo, xml_name: str, xml: BlobInfo
) -> dict[str, Any]:
    return {
        "name": meta.name,
        "version": meta.version,
        "frames": meta.frames,
        "fields": dicomjson.dumps(meta.fields),
        "data_filename": data_name,
        "data_key": data.key,
        "data_size": data.size,
        "data_sha256": data.sha256,
        "xml_filename": xml_name,
        "xml_key": xml.key,
        "xml_size": xml.size,
        "xml_sha256": xml.sha256,
    }


def _model_out(model: Any) -> ModelOut:
    return ModelOut(
        name=model.name,
        version=model.version,
        frames=model.frames,
        fields=dicomjson.loads(model.fields or "{}"),
        data=BlobOut(
            filename=model.data_filename,
            media_type="application/zip",
            size=model.data_size,
            sha256=model.data_sha256,
        ),
        metadata=BlobOut(
            filename=model.xml_filename,
            media_type="application/xml",
            size=model.xml_size,
            sha256=model.xml_sha256,
        ),
    )


def _event_out(
    row: sql.EventRow, subject_id: str, prev_id: int | None, next_id: int | None
) -> EventOut:
    event = row.event
    diagnosis = None
    if row.diagnosis is not None:
        d = row.diagnosis
        diagnosis = DiagnosisIn(
            height_cm=d.height_cm,
            weight_kg=d.weight_kg,
            heart_rate_bpm=d.heart_rate_bpm,
            systolic_bp_mmhg=d.systolic_bp_mmhg,
            diastolic_bp_mmhg=d.diastolic_bp_mmhg,
            diagnosis=d.diagnosis,
            extra=dicomjson.loads(d.extra or "{}"),
        )
    note = None
    if row.note is not None:
        note = NoteIn(text=row.note.text, author=row.note.author, note_kind=row.note.note_kind)
    return EventOut(
        id=event.id,
        subject_id=subject_id,
        kind=event.kind,
        date=event.event_date,
        position=event.position,
        prev_id=prev_id,
        next_id=next_id,
        title=event.title,
        description=event.description,
        session_number=event.session_number,
        links=[LinkOut(study_instance_uid=u, present=p) for u, p in row.links],
        note=note,
        diagnosis=diagnosis,
        file=_blob_out(row.file) if row.file is not None else None,
        model=_model_out(row.model) if row.model is not None else None,
        created_at=event.created_at,
    )


def _with_neighbours(
    order: Sequence[int], rows: dict[int, sql.EventRow], subject_id: str
) -> list[EventOut]:
    out = []
    for index, event_id in enumerate(order):
        prev_id = order[index - 1] if index > 0 else None
        next_id = order[index + 1] if index + 1 < len(order) else None
        out.append(_event_out(rows[event_id], subject_id, prev_id, next_id))
    return out
