"""The ``vesalius`` command, run as a user would: serve, import, reindex, doctor, config, db."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dicomgen import make_dataset, to_bytes, uid, write
from ports import free_port

VESALIUS = [sys.executable, "-m", "vesalius"]


def run(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        VESALIUS + args,
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "VESALIUS_DATA_DIR": str(tmp_path / "data"),
        "VESALIUS_DICOM_PORT": "0",
        "VESALIUS_HTTP_PORT": "0",
        "VESALIUS_DICOM_HOST": "127.0.0.1",
    }


def test_help_reads_well() -> None:
    result = run(["--help"], {})
    assert result.returncode == 0
    for command in ("serve", "import", "reindex", "doctor", "db", "config"):
        assert command in result.stdout


def test_config_show_masks_secrets(env: dict[str, str]) -> None:
    result = run(
        ["config", "show", "--json"],
        {**env, "VESALIUS_DATABASE_URL": "postgresql+psycopg://u:topsecret@db/x"},
    )
    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout
    assert "***" in result.stdout


def test_bad_configuration_is_explained(env: dict[str, str]) -> None:
    result = run(["config", "show"], {**env, "VESALIUS_DICOM_PORT": "abc"})
    assert result.returncode == 2
    assert "dicom_port" in result.stderr


def test_a_removed_setting_is_noted_not_fatal(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "old.toml"
    config.write_text('dicom_engine = "pynetdicom"\n')
    result = run(["config", "show", "-c", str(config)], {**env, "VESALIUS_DICOM_ENGINE": "x"})
    assert result.returncode == 0, result.stderr
    stderr = " ".join(result.stderr.split())
    assert f"dicom_engine (in {config}) was removed in this version and is ignored" in stderr
    assert "VESALIUS_DICOM_ENGINE: dicom_engine was removed in this version" in stderr
    assert "not a Vesalius setting" not in stderr
    assert "dicom_engine" not in result.stdout


def test_import_folder_and_zip_with_a_report(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    study = uid()
    for i in range(3):
        write(folder / "sub", make_dataset(StudyInstanceUID=study, InstanceNumber=i))
    (folder / "notes.txt").write_text("not dicom")
    with zipfile.ZipFile(tmp_path / "more.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/one.dcm", to_bytes(make_dataset(PatientID="ZIP")))
        archive.writestr("../evil.dcm", b"garbage")
        archive.writestr("bomb.dcm", b"\0" * 20_000_000)  # expands ~1000 times
    result = run(
        ["import", str(folder), str(tmp_path / "more.zip"), str(tmp_path / "missing")], env
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Stored 4, duplicates 0, rejected 4." in result.stdout
    assert "zip bomb" in result.stdout
    assert "notes.txt" in result.stdout
    assert "no such file or folder" in result.stdout
    assert "not a DICOM file" in result.stdout
    assert "force=True" not in result.stdout  # pydicom's advice, not one for an importing user
    # Importing again stores nothing new.
    again = run(["import", str(folder / "sub")], env)
    assert again.returncode == 0
    assert "Stored 0, duplicates 3, rejected 0." in again.stdout


def test_import_reports_in_its_own_words_at_80_columns(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    deep = folder / ("a-folder-name-long-enough-to-pass-eighty-columns-on-its-own" * 2)
    good = to_bytes(make_dataset(PatientID="G1"))
    write(deep, make_dataset(PatientID="G2"), "a-good-file-with-a-long-name.dcm")
    bad_value = make_dataset(PatientID="BADVAL")
    bad_value.StudyDate = "2020-13-99x"  # pydicom warns about it; stored all the same
    write(folder, bad_value, "bad-value.dcm")
    (deep / "an-empty-file-with-a-name-that-is-long-as-well.dcm").write_bytes(b"")
    (folder / "cut.dcm").write_bytes(good[: len(good) // 2])
    (folder / "report.pdf").write_bytes(b"%PDF-1.4" + b"x" * 400)
    no_study = make_dataset(PatientID="NOSTUDY")
    del no_study.StudyInstanceUID
    write(folder, no_study, "no-study.dcm")
    report = tmp_path / "report.csv"
    result = run(["import", str(folder), "--report", str(report)], {**env, "COLUMNS": "80"})
    assert result.returncode == 1
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "force=True" not in result.stdout and "UserWarning" not in result.stdout
    empty = deep / "an-empty-file-with-a-name-that-is-long-as-well.dcm"
    lines = result.stdout.splitlines()
    assert f"  {empty}" in lines  # the whole name on one line, not cut or folded
    assert "the file is empty" in result.stdout
    assert "no 'DICM' marker" in result.stdout
    assert "StudyInstanceUID is missing or empty: every archived instance needs it" in result.stdout
    import csv

    with report.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    outcomes = {Path(r["file"]).name: (r["outcome"], r["reason"]) for r in rows}
    assert outcomes["a-good-file-with-a-long-name.dcm"] == ("stored", "")
    assert outcomes["bad-value.dcm"][0] == "stored"
    assert outcomes["report.pdf"][0] == "rejected"
    assert outcomes[empty.name] == ("rejected", "the file is empty; copy it again from its source")
    assert outcomes["cut.dcm"][0] == "rejected" and outcomes["cut.dcm"][1]
    assert len(rows) == 6


@pytest.mark.parametrize("columns", ["50", "100", "250"])
def test_config_show_never_cuts_names(env: dict[str, str], columns: str) -> None:
    from vesalius.config import Settings

    result = run(["config", "show"], {**env, "COLUMNS": columns})
    assert result.returncode == 0, result.stderr
    for name in Settings.model_fields:
        assert re.search(rf"\bVESALIUS_{name.upper()}\b", result.stdout), (columns, name)
        assert re.search(rf"(^|[│ ]){name}( |$)", result.stdout, re.M), (columns, name)


def test_reindex_gives_back_the_same_index(env: dict[str, str], tmp_path: Path) -> None:
    from vesalius.config import load_settings
    from vesalius.container import build
    from vesalius.index import imaging

    folder = tmp_path / "in"
    for i in range(4):
        write(folder, make_dataset(PatientID=f"P{i % 2}", InstanceNumber=i))
    assert run(["import", str(folder)], env).returncode == 0
    container = build(load_settings(env=env))
    with container.db.read() as session:
        before = imaging.snapshot(session)
    container.close()
    result = run(["reindex", "--yes"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Indexed 4 instances" in result.stdout
    container = build(load_settings(env=env))
    with container.db.read() as session:
        assert imaging.snapshot(session) == before
    container.close()


def test_doctor_reports_in_plain_words(env: dict[str, str], tmp_path: Path) -> None:
    good = run(["doctor"], env)
    assert good.returncode == 0, good.stdout
    assert "Everything looks right." in good.stdout
    bad = run(
        ["doctor"], {**env, "VESALIUS_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    )
    assert bad.returncode == 1
    assert "does not answer" in bad.stdout
    assert "***" not in bad.stdout or "nobody" in bad.stdout


def test_db_upgrade_is_idempotent(env: dict[str, str]) -> None:
    first = run(["db", "upgrade"], env)
    assert first.returncode == 0, first.stderr
    assert "Upgraded the database from empty" in first.stdout
    second = run(["db", "upgrade"], env)
    assert "up to date" in second.stdout


def test_serve_logs_its_ports_answers_and_stops_on_sigterm(env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [*VESALIUS, "serve"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ports: dict[str, int] = {}
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while len(ports) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if match := re.search(r"(dicom|http)_port=(\d+)", line):
                ports[match.group(1)] = int(match.group(2))
        assert set(ports) == {"dicom", "http"}, "".join(lines)
        echo = subprocess.run(
            ["/usr/bin/echoscu", "-aec", "VESALIUS", "127.0.0.1", str(ports["dicom"])],
            capture_output=True,
            timeout=30,
        )
        if Path("/usr/bin/echoscu").exists():
            assert echo.returncode == 0
        import httpx

        answer = httpx.get(f"http://127.0.0.1:{ports['http']}/api/system", timeout=10)
        assert answer.json()["name"] == "Vesalius"
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "stopped" in rest


def test_serve_refuses_a_port_in_use(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(["serve"], {**env, "VESALIUS_DICOM_PORT": str(port)})
    assert result.returncode == 1
    assert "cannot listen for DICOM" in result.stdout + result.stderr


@dataclass
class Workers:
    """A `vesalius serve` with two workers on fixed ports, and the workers' PIDs."""

    dicom_port: int
    http_port: int
    pids: set[int]


@contextlib.contextmanager
def two_workers(env: dict[str, str]) -> Iterator[Workers]:
    """Serve with VESALIUS_WORKERS=2 until both workers have started; stop it at the end."""
    dicom_port, http_port = free_port(), free_port()
    workers_env = {
        **env,
        "VESALIUS_WORKERS": "2",
        "VESALIUS_DICOM_PORT": str(dicom_port),
        "VESALIUS_HTTP_PORT": str(http_port),
    }
    process = subprocess.Popen(
        [*VESALIUS, "serve"],
        env={**os.environ, **workers_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        pids: set[int] = set()
        deadline = time.monotonic() + 90
        while len(pids) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if match := re.search(r"Started server process \[(\d+)\]", line):
                pids.add(int(match.group(1)))
        assert len(pids) == 2
        yield Workers(dicom_port, http_port, pids)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0


def test_workers_share_the_ports_and_the_archive(env: dict[str, str], tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    with two_workers(env) as served:

        def send(i: int) -> int:
            ae = AE()
            ae.add_requested_context(CTImageStorage)
            assoc = ae.associate("127.0.0.1", served.dicom_port, ae_title="VESALIUS")
            try:
                ds = make_dataset(PatientID=f"W{i}")
                return int(assoc.send_c_store(ds).Status)
            finally:
                assoc.release()

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(send, range(8))) == [0] * 8
    from vesalius.config import load_settings
    from vesalius.container import build

    container = build(load_settings(env=env))
    try:
        assert container.archive.totals().patients == 8
    finally:
        container.close()


def _established(pid: int, port: int) -> int:
    """Connections process *pid* holds that were accepted on local *port* (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def test_workers_share_new_connections_evenly(env: dict[str, str]) -> None:
    """Four associations (and HTTP connections) on two workers: two each, every time.

    The kernel's SO_REUSEPORT hashing put three or four on one worker in most runs; the
    workers now share one socket and leave each association to the least busy of them.
    """
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    with two_workers(env) as served:
        ae = AE()
        ae.add_requested_context(Verification)
        for _ in range(3):  # rounds: the board counts associations down as they end
            associations = [
                ae.associate("127.0.0.1", served.dicom_port, ae_title="VESALIUS") for _ in range(4)
            ]
            try:
                assert all(a.is_established for a in associations)
                assert all(a.send_c_echo().Status == 0 for a in associations)
                spread = sorted(_established(pid, served.dicom_port) for pid in served.pids)
                assert spread == [2, 2]
            finally:
                for association in associations:
                    association.release()
            time.sleep(0.5)
        # HTTP keep-alive connections (four STOW-RS clients, say) spread the same way.
        clients = [httpx.Client(timeout=30) for _ in range(4)]
        try:
            for client in clients:
                url = f"http://127.0.0.1:{served.http_port}/login"
                assert client.get(url).status_code == 200
            spread = sorted(_established(pid, served.http_port) for pid in served.pids)
            assert spread == [2, 2]
        finally:
            for client in clients:
                client.close()


def test_workers_need_fixed_ports(env: dict[str, str]) -> None:
    result = run(["serve"], {**env, "VESALIUS_WORKERS": "2"})
    assert result.returncode == 2
    assert "fixed DICOM and HTTP ports" in result.stderr
