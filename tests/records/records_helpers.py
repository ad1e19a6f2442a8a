"""For the records tests: the running server, and builders of studies, models and hostile zips."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select

from authhelp import admin_headers
from dicomgen import make_file, uid
from httpserver import running_app
from vesalius.container import Container
from vesalius.index import records_models as rm
from vesalius.records.files import RECORDS_PREFIX

LIMITS: dict[str, Any] = {
    "subject_id_scheme": "cap",
    "max_aux_file_bytes": 2 * 1024 * 1024,
    "max_heart_model_bytes": 4 * 1024 * 1024,
    "max_heart_model_xml_bytes": 256 * 1024,
    "zip_max_uncompressed_bytes": 64 * 1024 * 1024,
    "zip_max_members": 1000,
    "zip_max_ratio": 100.0,
}

RECORD_MODELS = (
    rm.Subject,
    rm.Event,
    rm.StudyLink,
    rm.ClinicalNote,
    rm.AuxFile,
    rm.HeartModel,
    rm.HeartModelField,
    rm.BaselineDiagnosis,
)


@dataclass
class RunningHttp:
    url: str
    container: Container
    client: httpx.Client

    def row_counts(self) -> dict[str, int]:
        """How many rows each records table holds."""
        with self.container.db.read() as session:
            return {
                m.__tablename__: session.execute(select(func.count()).select_from(m)).scalar_one()
                for m in RECORD_MODELS
            }

    def record_blobs(self) -> list[str]:
        return [k for k in self.container.blobs.iter_keys() if k.startswith(RECORDS_PREFIX)]


def serve(container: Container) -> Iterator[RunningHttp]:
    """Serve the app of *container* on 127.0.0.1:<ephemeral> until the generator closes."""
    with running_app(container) as url:
        # Every route needs credentials: an admin API token as a Bearer header.
        headers = admin_headers(container)
        with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
            yield RunningHttp(url, container, client)


def store_study(
    container: Container, patient_id: str, study_date: str = "20240102", **kw: Any
) -> str:
    """Store a one-instance study for *patient_id*; returns its StudyInstanceUID."""
    study = uid()
    container.archive.store(
        make_file(PatientID=patient_id, StudyInstanceUID=study, StudyDate=study_date, **kw)
    )
    return study


def model_zip(members: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in (members or {"mesh/frame01.txt": b"0 0 0\n1 1 1\n" * 100}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def model_xml(
    name: str = "LV fit", version: str = "2.1", frames: int = 20, studies: tuple[str, ...] = ()
) -> bytes:
    refs = "".join(f'<Study uid="{s}"/>' for s in studies)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<HeartModel name="{name}" version="{version}">'
        f"<Frames>{frames}</Frames><Author>Atlas team</Author>{refs}</HeartModel>"
    ).encode()


def raw_zip(name: str, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip whose single member has exactly *name*, however hostile (no path cleaning)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = method
        archive.writestr(info, data)
    return buffer.getvalue()


def upload_model(client: Any, subject: str, data: bytes, xml: bytes, **form: Any) -> Any:
    return client.post(
        f"/api/subjects/{subject}/models",
        files={
            "data": ("model.zip", data, "application/zip"),
            "metadata": ("model.xml", xml, "application/xml"),
        },
        data={"date": "2024-01-05", **form},
    )
