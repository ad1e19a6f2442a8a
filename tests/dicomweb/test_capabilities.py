"""The capabilities transaction (OPTIONS, PS3.18 8.9) and the generated conformance statement."""

from __future__ import annotations

import re
from pathlib import Path

import defusedxml.ElementTree as ET
import httpx
import pytest
from pydicom.uid import CTImageStorage, JPEGLSLossless

from vesalius.config import Settings
from vesalius.conformance import markdown, statement

from .conftest import RunningWeb

WADL_NS = "{http://wadl.dev.java.net/2009/02}"
DOC = Path(__file__).parents[2] / "docs" / "conformance.md"


def anonymous(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//", url)


def test_the_committed_statement_is_what_the_code_generates() -> None:
    from vesalius.conformance import library_versions

    committed = DOC.read_text(encoding="utf-8")
    if f"Tables from {library_versions()}." not in committed:
        # UID names and the storage SOP classes come from these libraries: another version
        # lists other ones. The doc is checked where it was generated.
        pytest.skip(f"docs/conformance.md was not generated with {library_versions()}")
    expected = markdown(statement(Settings()))
    assert committed == expected, (
        "docs/conformance.md is out of date: run "
        "`env -i PATH=$PATH .venv/bin/vesalius conformance > docs/conformance.md`"
    )


def test_statement_follows_the_settings_and_tables() -> None:
    data = statement(Settings(ae_title="RESEARCH", transcode_lossy=True))
    assert data["application_entity"]["ae_title"] == "RESEARCH"
    scp = {c["uid"]: c["service"] for c in data["sop_classes_scp"]}
    assert scp[CTImageStorage] == "C-STORE"
    assert scp["1.2.840.10008.5.1.4.1.2.2.3"] == "C-GET"
    syntaxes = data["transfer_syntaxes"]
    assert syntaxes["encoded_lossless"][0]["uid"] == JPEGLSLossless
    assert syntaxes["lossy_encoding_enabled"] is True
    assert "ISO 2022 IR 87" in data["character_sets"]["defined_terms"]
    assert "ISO 2022 GBK" not in data["character_sets"]["defined_terms"]
    paths = {r["path"]: r["methods"] for r in data["dicomweb"]["resources"]}
    assert set(paths["/dicom-web/studies"]) == {"GET", "POST"}


def test_api_conformance_is_public_and_matches(sqlite_web: RunningWeb) -> None:
    response = httpx.get(anonymous(sqlite_web.url) + "/api/conformance")
    assert response.status_code == 200
    assert response.json() == statement(sqlite_web.container.settings)


def test_options_on_the_service_root_describes_every_resource(sqlite_web: RunningWeb) -> None:
    root = anonymous(sqlite_web.dicomweb)
    response = httpx.options(root)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.sun.wadl+xml")
    tree = ET.fromstring(response.content)
    resources = tree.find(f"{WADL_NS}resources")
    assert resources is not None and resources.get("base", "").endswith("/dicom-web/")
    paths = {r.get("path"): r for r in resources.findall(f"{WADL_NS}resource")}
    assert "studies" in paths and "studies/{study}/series/{series}/metadata" in paths
    methods = {m.get("name") for m in paths["studies"].findall(f"{WADL_NS}method")}
    assert methods == {"GET", "POST"}
    assert "OPTIONS" in response.headers["allow"]


def test_options_on_a_resource(sqlite_web: RunningWeb) -> None:
    root = anonymous(sqlite_web.dicomweb)
    study = f"{root}/studies/1.2.3"
    response = httpx.options(study)
    assert response.status_code == 200
    assert set(response.headers["allow"].split(", ")) == {
        "GET",
        "HEAD",
        "POST",
        "DELETE",
        "OPTIONS",
    }
    as_json = httpx.options(study, headers={"Accept": "application/json"})
    assert as_json.headers["content-type"] == "application/json"
    [resource] = as_json.json()
    assert resource["path"] == "/dicom-web/studies/{study}"
    assert resource["methods"]["DELETE"] == "Delete a study"
    frames = httpx.options(f"{root}/studies/1/series/2/instances/3/frames/1")
    assert frames.headers["allow"] == "GET, HEAD, OPTIONS"
    refused = httpx.options(study, headers={"Accept": "image/png"})
    assert refused.status_code == 406 and "application/vnd.sun.wadl+xml" in refused.text
    # No such resource: not described.
    assert httpx.options(f"{root}/nothing-here").status_code in (404, 405)
    # Reading the resource itself still needs credentials.
    assert httpx.get(study).status_code == 401


def test_cli_prints_the_statement_for_its_settings(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    config = tmp_path / "vesalius.toml"
    config.write_text('ae_title = "CLIPACS"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("VESALIUS_")}
    result = subprocess.run(
        [sys.executable, "-m", "vesalius", "conformance", "--json", "--config", str(config)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout)["application_entity"]["ae_title"] == "CLIPACS"
    text = subprocess.run(
        [sys.executable, "-m", "vesalius", "conformance"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert text == markdown(statement(Settings()))
