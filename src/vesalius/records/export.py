"""A subject out of the archive and back in: one zip with a JSON manifest.

Layout of the zip::

    manifest.json                          the whole record (see :class:`Manifest`)
    dicom/<StudyInstanceUID>/<SOPInstanceUID>.dcm   the linked studies that are present
    files/<n>/<filename>                   the auxiliary file of the n-th event
    models/<n>/data/<filename>             the n-th event's heart model zip
    models/<n>/metadata/<filename>         and its XML

Events are numbered from 1 in timeline order. The manifest holds no database ids or
timestamps, so exporting a subject imported from an export gives back the same manifest.

An import checks everything before it writes anything: the zip (limits, paths), the manifest,
every DICOM file, every model (as an upload is checked) and every checksum. It then writes
the blobs, the record in one transaction (removing the blobs if that fails), and last stores
the DICOM files through the archive; their index hook finds the imaging sessions already in
place. The subject must not exist yet.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from sqlalchemy.exc import IntegrityError

from vesalius.archive.parse import parse_instance
from vesalius.archive.service import StoreStatus
from vesalius.dicom import dicomjson
from vesalius.errors import Conflict, InvalidInstance
from vesalius.index import records as sql
from vesalius.records import files as filemod
from vesalius.records.errors import InvalidRecord, TooLarge
from vesalius.records.heart_models import ModelMetadata
from vesalius.records.safezip import ZipLimits, check_zip, read_member
from vesalius.records.schemas import (
    DiagnosisIn,
    EventKind,
    ImportOut,
    NoteIn,
    SubjectIn,
    check_uid,
)
from vesalius.records.service import Records, model_values
from vesalius.storage.base import BlobInfo

FORMAT = "vesalius-subject"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 256 * 1024**2
_SPOOL = 16 * 1024**2


class ManifestBlob(BaseModel):
    path: str
    filename: str
    media_type: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ManifestModel(BaseModel):
    name: str | None = None
    version: str | None = None
    frames: int | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    data: ManifestBlob
    metadata: ManifestBlob


class ManifestEvent(BaseModel):
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    date: dt.date
    position: int = Field(ge=0)
    title: str | None = Field(default=None, max_length=256)
    description: str | None = None
    session_number: int | None = None
    session_study_uid: str | None = Field(default=None, max_length=64)
    links: list[str] = Field(default_factory=list)
    note: NoteIn | None = None
    diagnosis: DiagnosisIn | None = None
    file: ManifestBlob | None = None
    model: ManifestModel | None = None

    _uids = field_validator("links")(lambda values: [check_uid(v) for v in values])

    @model_validator(mode="after")
    def _parts_match_kind(self) -> ManifestEvent:
        if (self.kind == EventKind.AUX_FILE) != (self.file is not None):
            raise ValueError("an aux_file event needs a file, and only it may have one")
        if (self.kind == EventKind.HEART_MODEL) != (self.model is not None):
            raise ValueError("a heart_model event needs a model, and only it may have one")
        return self


class ManifestInstance(BaseModel):
    path: str
    sop_instance_uid: str
    size: int
    sha256: str


class ManifestStudy(BaseModel):
    study_instance_uid: str
    instances: list[ManifestInstance]


class Manifest(BaseModel):
    format: Literal["vesalius-subject"] = FORMAT
    version: Literal[1] = 1
    subject: SubjectIn
    events: list[ManifestEvent]
    studies: list[ManifestStudy]


# -- export -------------------------------------------------------------------------------------


def export_subject(records: Records, subject_id: str) -> IO[bytes]:
    """The subject's export zip in a temporary file, positioned at its start.

    Raises ``NotFound`` when there is no such subject.
    """
    with records.db.read() as session:
        subject = records.subject_row(session, subject_id)
        order = sql.ordered_event_ids(session, subject.id)
        rows = sql.load_events(session, order)
        study_uids = sql.linked_present_studies(session, subject.id)
    spool = tempfile.TemporaryFile()  # noqa: SIM115  (closed by the caller once streamed)
    try:
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            events = []
            for number, event_id in enumerate(order, 1):
                events.append(_export_event(records, archive, number, rows[event_id]))
            studies = [_export_study(records, archive, uid) for uid in study_uids]
            manifest = Manifest(
                subject=SubjectIn(
                    subject_id=subject.subject_id,
                    sex=subject.sex,
                    birth_date=subject.birth_date,
                    cohort=subject.cohort,
                    description=subject.description,
                    extra=dicomjson.loads(subject.extra or "{}"),
                ),
                events=events,
                studies=studies,
            )
            archive.writestr(MANIFEST, manifest.model_dump_json(indent=2))
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _copy_blob(
    records: Records, archive: zipfile.ZipFile, key: str, path: str, *, compress: bool = True
) -> str:
    """Copy a blob into the bundle; returns the hex SHA-256 of what was copied (the manifest
    publishes SHA-256, whatever digest the index keeps)."""
    info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    digest = hashlib.sha256()
    with records.open_blob(key) as source, archive.open(info, "w", force_zip64=True) as target:
        while chunk := source.read(filemod.CHUNK):
            digest.update(chunk)
            target.write(chunk)
    return digest.hexdigest()


def _export_event(
    records: Records, archive: zipfile.ZipFile, number: int, row: sql.EventRow
) -> ManifestEvent:
    event = row.event
    parts: dict[str, Any] = {}
    if row.note is not None:
        parts["note"] = NoteIn(
            text=row.note.text, author=row.note.author, note_kind=row.note.note_kind
        )
    if row.diagnosis is not None:
        d = row.diagnosis
        parts["diagnosis"] = DiagnosisIn(
            height_cm=d.height_cm,
            weight_kg=d.weight_kg,
            heart_rate_bpm=d.heart_rate_bpm,
            systolic_bp_mmhg=d.systolic_bp_mmhg,
            diastolic_bp_mmhg=d.diastolic_bp_mmhg,
            diagnosis=d.diagnosis,
            extra=dicomjson.loads(d.extra or "{}"),
        )
    if row.file is not None:
        f = row.file
        path = f"files/{number:04d}/{f.filename}"
        _copy_blob(records, archive, f.blob_key, path)
        parts["file"] = ManifestBlob(
            path=path, filename=f.filename, media_type=f.media_type, size=f.size, sha256=f.sha256
        )
    if row.model is not None:
        m = row.model
        data_path = f"models/{number:04d}/data/{m.data_filename}"
        xml_path = f"models/{number:04d}/metadata/{m.xml_filename}"
        _copy_blob(records, archive, m.data_key, data_path, compress=False)
        _copy_blob(records, archive, m.xml_key, xml_path)
        parts["model"] = ManifestModel(
            name=m.name,
            version=m.version,
            frames=m.frames,
            fields=dicomjson.loads(m.fields or "{}"),
            data=ManifestBlob(
                path=data_path,
                filename=m.data_filename,
                media_type="application/zip",
                size=m.data_size,
                sha256=m.data_sha256,
            ),
            metadata=ManifestBlob(
                path=xml_path,
                filename=m.xml_filename,
                media_type="application/xml",
                size=m.xml_size,
                sha256=m.xml_sha256,
            ),
        )
    return ManifestEvent(
        kind=event.kind,
        date=event.event_date,
        position=event.position,
        title=event.title,
        description=event.description,
        session_number=event.session_number,
        session_study_uid=event.session_study_uid,
        links=[uid for uid, _present in row.links],
        **parts,
    )


def _export_study(records: Records, archive: zipfile.ZipFile, study_uid: str) -> ManifestStudy:
    instances = []
    for record in sorted(records.archive.instances_of(study_uid), key=lambda r: r.sop_instance_uid):
        path = f"dicom/{study_uid}/{record.sop_instance_uid}.dcm"
        sha256 = _copy_blob(records, archive, record.blob_key, path)
        instances.append(
            ManifestInstance(
                path=path,
                sop_instance_uid=record.sop_instance_uid,
                size=record.size,
                sha256=sha256,
            )
        )
    return ManifestStudy(study_instance_uid=study_uid, instances=instances)


# -- import -------------------------------------------------------------------------------------


def import_subject(records: Records, source: IO[bytes]) -> ImportOut:
    """Rebuild a subject from its export zip (*source* must be seekable).

    Raises
    ------
    Conflict
        When the subject exists already; nothing is written.
    InvalidRecord, TooLarge, UnsafeContent, InvalidInstance
        When any part of the zip is refused; nothing is written.
    """
    settings = records.settings
    source.seek(0, 2)
    if source.tell() > settings.max_subject_import_bytes:
        raise TooLarge(
            f"the export is larger than {settings.max_subject_import_bytes} bytes, the limit "
            "(max_subject_import_bytes)"
        )
    source.seek(0)
    limits = ZipLimits(
        max_uncompressed=settings.max_subject_import_bytes,
        max_members=settings.zip_max_members,
        max_ratio=settings.zip_max_ratio,
    )
    check_zip(source, limits, "the subject export", verify=False)
    source.seek(0)
    with zipfile.ZipFile(source) as archive:
        importer = _Importer(records, archive)
        return importer.run()


class _Importer:
    def __init__(self, records: Records, archive: zipfile.ZipFile) -> None:
        self.records = records
        self.archive = archive
        self.members = {info.filename: info for info in archive.infolist()}
        self.blobs: list[BlobInfo] = []

    def member(self, path: str) -> zipfile.ZipInfo:
        info = self.members.get(path)
        if info is None:
            raise InvalidRecord(f"the export lacks {path}, which its manifest names")
        return info

    def read(self, path: str, limit: int) -> Iterator[bytes]:
        info = self.member(path)
        if info.file_size > limit:
            raise TooLarge(f"{path} is {info.file_size} bytes, over the limit of {limit}")
        return read_member(self.archive, info, "the subject export")

    def manifest(self) -> Manifest:
        data = b"".join(self.read(MANIFEST, MAX_MANIFEST_BYTES))
        try:
            return Manifest.model_validate_json(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise InvalidRecord(f"the export's manifest is not valid: {problems}") from None

    def run(self) -> ImportOut:
        manifest = self.manifest()
        subject_id = manifest.subject.subject_id
        self._refuse_existing(subject_id)
        self._check_dicom(manifest)
        models: dict[int, tuple[IO[bytes], bytes, ModelMetadata]] = {}
        try:
            for number, event in enumerate(manifest.events):
                if event.model is not None:
                    models[number] = self._check_model(event.model)
            try:
                self._write_record(manifest, models)
            except BaseException:
                self.records.discard([b.key for b in self.blobs])
                raise
        finally:
            for spool, _xml, _meta in models.values():
                spool.close()
        stored = present = 0
        for study in manifest.studies:
            for instance in study.instances:
                data = b"".join(self.read(instance.path, instance.size))
                outcome = self.records.archive.store(data, origin=f"import:{subject_id}"[:255])
                if outcome.status in (StoreStatus.STORED, StoreStatus.REPLACED):
                    stored += 1
                else:
                    present += 1
        return ImportOut(
            subject=self.records.get_subject(subject_id),
            events=len(manifest.events),
            instances_stored=stored,
            instances_already_present=present,
        )

    def _refuse_existing(self, subject_id: str) -> None:
        with self.records.db.read() as session:
            if sql.get_subject(session, subject_id) is not None:
                raise Conflict(f"subject {subject_id} already exists; delete it to import again")

    def _check_dicom(self, manifest: Manifest) -> None:
        for study in manifest.studies:
            for instance in study.instances:
                data = b"".join(self.read(instance.path, instance.size))
                if hashlib.sha256(data).hexdigest() != instance.sha256:
                    raise InvalidRecord(f"{instance.path} does not match its manifest checksum")
                try:
                    parsed = parse_instance(data)
                except InvalidInstance as exc:
                    raise InvalidInstance(f"{instance.path}: {exc}") from None
                if parsed.study_instance_uid != study.study_instance_uid:
                    raise InvalidRecord(
                        f"{instance.path} belongs to study {parsed.study_instance_uid}, "
                        f"not {study.study_instance_uid} as the manifest says"
                    )

    def _check_model(self, model: ManifestModel) -> tuple[IO[bytes], bytes, ModelMetadata]:
        settings = self.records.settings
        spool = tempfile.SpooledTemporaryFile(_SPOOL)  # noqa: SIM115  (closed by run())
        try:
            for chunk in self.read(model.data.path, settings.max_heart_model_bytes):
                spool.write(chunk)
            xml = b"".join(self.read(model.metadata.path, settings.max_heart_model_xml_bytes))
            xml_bytes, meta = self.records.check_model(spool, io.BytesIO(xml))
        except BaseException:
            spool.close()
            raise
        return spool, xml_bytes, meta

    def _put(self, kind: str, chunks: Any, expected: ManifestBlob, suffix: str = "") -> BlobInfo:
        blob = self.records.blobs.put(filemod.new_key(kind, suffix), chunks)
        self.blobs.append(blob)
        if blob.sha256 != expected.sha256:
            raise InvalidRecord(f"{expected.path} does not match its manifest checksum")
        return blob

    def _write_record(
        self, manifest: Manifest, models: dict[int, tuple[IO[bytes], bytes, ModelMetadata]]
    ) -> None:
        settings = self.records.settings
        files: dict[int, BlobInfo] = {}
        model_blobs: dict[int, tuple[BlobInfo, BlobInfo]] = {}
        for number, event in enumerate(manifest.events):
            if event.file is not None:
                chunks = self.read(event.file.path, settings.max_aux_file_bytes)
                files[number] = self._put("files", chunks, event.file)
            if event.model is not None:
                spool, xml, _meta = models[number]
                spool.seek(0)
                data_blob = self._put(
                    "models", iter(lambda s=spool: s.read(filemod.CHUNK), b""), event.model.data
                )
                xml_blob = self._put("models", [xml], event.model.metadata, ".xml")
                model_blobs[number] = (data_blob, xml_blob)
        subject = manifest.subject
        ordered = sorted(enumerate(manifest.events), key=lambda p: (p[1].date, p[1].position))
        try:
            with self.records.db.write() as session:
                values = subject.model_dump(exclude={"extra"})
                values["extra"] = dicomjson.dumps(subject.extra or {})
                subject_pk = sql.insert_subject(session, values).id
                for number, event in ordered:
                    event_id = sql.insert_event(
                        session,
                        subject_pk,
                        {
                            "kind": event.kind,
                            "event_date": event.date,
                            "title": event.title,
                            "description": event.description,
                            "session_number": event.session_number,
                            "session_study_uid": event.session_study_uid,
                        },
                    )
                    self._write_parts(session, event_id, number, event, files, model_blobs, models)
        except IntegrityError as exc:
            raise Conflict(
                f"the record of subject {subject.subject_id} collides with one already in the "
                f"archive (an imaging session of one of its studies?): {exc.orig}"
            ) from None

    @staticmethod
    def _write_parts(
        session: Any,
        event_id: int,
        number: int,
        event: ManifestEvent,
        files: dict[int, BlobInfo],
        model_blobs: dict[int, tuple[BlobInfo, BlobInfo]],
        models: dict[int, tuple[IO[bytes], bytes, ModelMetadata]],
    ) -> None:
        if event.note is not None:
            sql.put_note(session, event_id, event.note.model_dump())
        if event.diagnosis is not None:
            sql.put_diagnosis(session, event_id, event.diagnosis.model_dump())
        if event.file is not None:
            blob = files[number]
            sql.add_file(
                session,
                event_id,
                {
                    "filename": filemod.clean_filename(event.file.filename, "file"),
                    "media_type": filemod.media_type_for(
                        event.file.filename, event.file.media_type
                    ),
                    "size": blob.size,
                    "sha256": blob.sha256,
                    "blob_key": blob.key,
                },
            )
        if event.model is not None:
            data_blob, xml_blob = model_blobs[number]
            meta = models[number][2]
            values = model_values(
                meta,
                filemod.clean_filename(event.model.data.filename, "model.zip"),
                data_blob,
                filemod.clean_filename(event.model.metadata.filename, "model.xml"),
                xml_blob,
            )
            sql.add_heart_model(session, event_id, values, meta.field_pairs())
        for uid in dict.fromkeys(event.links):
            sql.add_link(session, event_id, uid)
