"""Plugins: the example plugin installed in the test environment (entry point group
``vesalius.plugins``) refuses modality HD over DICOM and STOW, counts stores after commit,
serves its route behind the permission table and adds a command; broken plugins are named."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from authhelp import admin_headers, make_user
from dicomgen import make_dataset, make_file
from httpserver import running_app
from vesalius.auth.permissions import Permission, rule_for
from vesalius.container import Container, build
from vesalius.errors import InstanceRejected
from vesalius.plugins import PluginError

HERE = Path(__file__).parent
HEMODYNAMIC = "1.2.840.10008.5.1.4.1.1.9.2.1"


def test_the_installed_example_plugin_is_loaded(container: Container) -> None:
    names = [p.name for p in container.plugins]
    assert names[:4] == ["audit", "records", "routing", "example"]
    with pytest.raises(InstanceRejected, match="refused by example: modality HD is not"):
        container.archive.store(make_file(Modality="HD"))
    container.archive.store(make_file(Modality="CT"))
    assert container.archive.totals().instances == 1
    assert container.events.drain()
    researcher = make_user(container, "res", "referring_doctor")
    with running_app(container) as url:
        answer = httpx.get(f"{url}/plugins/example/counts", headers=admin_headers(container))
        assert answer.status_code == 200 and answer.json().get("CT", 0) >= 1
        assert httpx.get(f"{url}/plugins/example/counts").status_code == 401
        assert httpx.post(
            f"{url}/plugins/example/counts", headers=admin_headers(container)
        ).status_code in (403, 405)
        ok = httpx.get(
            f"{url}/plugins/example/counts", headers={"Authorization": f"Bearer {researcher}"}
        )
        assert ok.status_code == 200
    rule = rule_for("GET", "/plugins/example/counts")
    assert rule is not None and rule.permission is Permission.IMAGES_READ
    assert rule_for("DELETE", "/plugins/example/counts") is None  # fail closed


def test_a_disabled_plugin_is_not_loaded(make_settings: Any) -> None:
    container = build(make_settings(disabled_plugins=["Example", "routing"]), migrate=True)
    try:
        names = [p.name for p in container.plugins]
        assert names == ["audit", "records"]
        container.archive.store(make_file(Modality="HD"))  # the example's filter is absent
        assert container.archive.totals().instances == 1
    finally:
        container.close()


def test_a_plugin_outside_plugins_cannot_claim_other_routes() -> None:
    from vesalius.auth.permissions import add_plugin_rule

    with pytest.raises(ValueError, match="under /plugins/"):
        add_plugin_rule("GET", "/api/*", Permission.PUBLIC)


def test_missing_or_broken_plugins_are_named(make_settings: Any) -> None:
    with pytest.raises(PluginError, match=r"plugin 'no_such_plugin_xyz'.*cannot be loaded"):
        build(make_settings(plugins=["no_such_plugin_xyz"]), migrate=True)
    sys.path.insert(0, str(HERE))
    try:
        with pytest.raises(PluginError, match="plugin 'broken_setup' failed to set up: Runtime"):
            build(make_settings(plugins=["broken_setup"]), migrate=True)
    finally:
        sys.path.remove(str(HERE))


def _serve(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vesalius", "serve"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_refuses_the_plugins_modality_over_dicom_and_says_why(tmp_path: Path) -> None:
    env = {
        "VESALIUS_DATA_DIR": str(tmp_path / "data"),
        "VESALIUS_DICOM_PORT": "0",
        "VESALIUS_DICOM_HOST": "127.0.0.1",
        "VESALIUS_HTTP_ENABLED": "false",
    }
    process = _serve(env)
    try:
        assert process.stdout is not None
        port = None
        lines = []
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if match := re.search(r"dicom_port=(\d+)", line):
                port = int(match.group(1))
        assert port is not None, "".join(lines)
        assert any("plugin example loaded" in line for line in lines), "".join(lines)
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(HEMODYNAMIC, ExplicitVRLittleEndian)
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="VESALIUS")
        assert assoc.is_established
        try:
            refused = assoc.send_c_store(make_dataset(Modality="HD", sop_class=HEMODYNAMIC))
            stored = assoc.send_c_store(make_dataset(Modality="CT"))
        finally:
            assoc.release()
        assert refused.Status == 0xC000
        assert "modality HD is not archived here" in str(refused.get("ErrorComment", ""))
        assert stored.Status == 0x0000
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0


def test_plugin_commands_and_a_bad_plugin_setting(tmp_path: Path) -> None:
    env = {**os.environ, "VESALIUS_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    run = lambda *args, **extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "vesalius", *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=120,
    )
    refused = run("example", "refused")
    assert refused.returncode == 0 and "refused modality: HD" in refused.stdout
    bad = {"VESALIUS_PLUGINS": '["no_such_plugin_xyz"]', "VESALIUS_DICOM_PORT": "0"}
    doctor = run("doctor", **bad)
    assert doctor.returncode == 1 and "no_such_plugin_xyz" in doctor.stdout
    serve = run("serve", **bad)
    assert serve.returncode == 1
    assert "plugin 'no_such_plugin_xyz'" in serve.stdout + serve.stderr
