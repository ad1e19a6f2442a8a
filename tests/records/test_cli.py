"""``vesalius records``: bulk import from CSV and folders, export, sync — run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from records_helpers import model_xml, model_zip

from dicomgen import make_file, uid

VESALIUS = [sys.executable, "-m", "vesalius"]


def run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> Any:
    return subprocess.run(
        VESALIUS + args,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "250", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"VESALIUS_DATA_DIR": str(tmp_path / "data"), "VESALIUS_SUBJECT_ID_SCHEME": "cap"}


CSV = """subject_id,sex,cohort,kind,date,title,note_text,note_author,height_cm,weight_kg,diagnosis.lvef,file,model_data,model_metadata
XYZ00015,F,HCM,,,,,,,,,,,
XYZ00015,,,clinical_note,2024-01-02,first visit,Chest pain.,Dr A,,,,,,
XYZ00015,,,baseline_diagnosis,2024-01-02,,,,171.5,70.2,58,,,
XYZ00015,,,aux_file,2024-01-03,echo,,,,,,report.pdf,,
XYZ00015,,,heart_model,2024-01-04,fit,,,,,,,model.zip,model.xml
ABC00001,M,,gp_visit,2024-02-30,bad date,,,,,,,,
ABC00002,,,clinical_note,2024-02-01,no text,,,,,,,,
ABC00003,,,aux_file,2024-02-01,,,,,,,missing.pdf,,
"""


def test_bulk_import_export_and_sync(tmp_path: Path, env: dict[str, str]) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "records.csv").write_text(CSV)
    (folder / "report.pdf").write_bytes(b"%PDF-1.4 report")
    (folder / "model.zip").write_bytes(model_zip())
    (folder / "model.xml").write_bytes(model_xml())
    (folder / "bad.csv").write_text("patient,kind\nx,y\n")

    result = run(["records", "import", "incoming"], env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    output = " ".join(result.stdout.split())
    assert "Subjects created 1" in output and "events added 4" in output
    assert "rejected 4" in output and "imported from zips 0" in output
    assert "records.csv:7" in output and "date" in output  # 2024-02-30
    assert "records.csv:8" in output and "note_text" in output
    assert "records.csv:9" in output and "missing.pdf" in output
    assert "bad.csv" in output and "no subject_id column" in output

    out_zip = tmp_path / "XYZ00015.zip"
    result = run(["records", "export", "XYZ00015", str(out_zip)], env)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(out_zip) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert archive.read("files/0003/report.pdf") == b"%PDF-1.4 report"
    assert manifest["subject"]["cohort"] == "HCM"
    assert [e["kind"] for e in manifest["events"]] == [
        "clinical_note",
        "baseline_diagnosis",
        "aux_file",
        "heart_model",
    ]
    assert manifest["events"][1]["diagnosis"]["extra"] == {"lvef": "58"}
    assert run(["records", "export", "NOBODY", str(tmp_path / "x.zip")], env).returncode == 1

    # The export goes into another archive as a folder import.
    other = {"VESALIUS_DATA_DIR": str(tmp_path / "other")}
    result = run(["records", "import", str(out_zip)], other)
    assert result.returncode == 0, result.stdout
    assert "imported from zips 1" in " ".join(result.stdout.split())
    again = tmp_path / "again.zip"
    run(["records", "export", "XYZ00015", str(again)], other)
    with zipfile.ZipFile(again) as archive:
        assert json.loads(archive.read("manifest.json")) == manifest

    # Studies without a session (archived before records existed) are linked by sync.
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    (dicom / "a.dcm").write_bytes(make_file(PatientID="QRS0000703", StudyInstanceUID=uid()))
    assert run(["import", str(dicom)], other).returncode == 0
    from vesalius.config import Settings
    from vesalius.container import build

    container = build(Settings(data_dir=tmp_path / "other", subject_id_scheme="cap"))
    try:
        assert container.records.get_subject("QRS0000703").event_count == 1  # patient_id scheme
        with pytest.raises(Exception, match="no subject"):
            container.records.get_subject("QRS00007")
        # Without its record (deleted, or never made before an upgrade) the study has no session.
        container.records.delete_subject("QRS0000703")
    finally:
        container.close()
    result = run(["records", "sync"], {**other, "VESALIUS_SUBJECT_ID_SCHEME": "cap"})
    assert result.returncode == 0, result.stderr
    container = build(Settings(data_dir=tmp_path / "other"))
    try:
        subject = container.records.get_subject("QRS00007")
        assert subject.event_count == 1
        [event] = container.records.timeline("QRS00007")
        assert event.session_number == 3
    finally:
        container.close()
