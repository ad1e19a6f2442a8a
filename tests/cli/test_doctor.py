"""Servers killed mid-ingest: `serve` sweeps temporaries, `doctor` lists and repairs the rest."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import select

from dicomgen import make_dataset, make_file
from serveproc import Served, api_token, serve
from vesalius.config import load_settings
from vesalius.container import build
from vesalius.index import imaging
from vesalius.index.models import Instance

KILLS = 3


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "VESALIUS_DATA_DIR": str(tmp_path / "data"),
        "VESALIUS_DICOM_PORT": "0",
        "VESALIUS_HTTP_PORT": "0",
        "VESALIUS_DICOM_HOST": "127.0.0.1",
    }


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vesalius", "doctor", *args],
        env={**os.environ, "COLUMNS": "250", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def c_store_until_killed(served: Served, acknowledged: list[str], stop: threading.Event) -> None:
    """Store small instances over one association until the server dies."""
    ae = AE(ae_title="KILLTEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", served.dicom_port, ae_title="VESALIUS")
    try:
        while assoc.is_established and not stop.is_set():
            ds = make_dataset(rows=64, columns=64)
            try:
                status = assoc.send_c_store(ds)
            except RuntimeError:  # the association died between the check and the send
                return
            if getattr(status, "Status", None) == 0x0000:
                acknowledged.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.abort()


def slow_stow(served: Served, token: str, stop: threading.Event) -> None:
    """A STOW-RS request whose one large part arrives slowly (the server dies meanwhile)."""
    part = make_file(rows=512, columns=512)
    head = (
        f"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        f"Content-Length: {len(part) + 100}\r\n\r\n--b\r\nContent-Type: application/dicom\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", served.http_port), timeout=10) as sock:
            sock.sendall(head)
            for at in range(0, len(part), 4096):
                if stop.is_set():
                    return
                sock.sendall(part[at : at + 4096])
                time.sleep(0.05)
    except OSError:
        return  # the server was killed


def test_killed_servers_leave_nothing_doctor_cannot_repair(env: dict[str, str]) -> None:
    storage = Path(env["VESALIUS_DATA_DIR"]) / "storage"
    rng = random.Random(8)
    acknowledged: list[str] = []
    previous_spools: set[str] = set()
    token = api_token(env)
    for _ in range(KILLS):
        served = serve(env)
        # serve swept what the previous kill left in the temporary folder
        assert previous_spools.isdisjoint(p.name for p in (storage / ".tmp").iterdir())
        stop = threading.Event()
        threads = [
            threading.Thread(target=c_store_until_killed, args=(served, acknowledged, stop)),
            threading.Thread(target=c_store_until_killed, args=(served, acknowledged, stop)),
            threading.Thread(target=slow_stow, args=(served, token, stop)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.5 + rng.random())
        served.kill()  # mid-ingest: the slow STOW part is always being spooled
        stop.set()
        for thread in threads:
            thread.join(30)
        previous_spools = {p.name for p in (storage / ".tmp").iterdir()}
        assert previous_spools, "the killed server left no spool of the part it was receiving"

    container = build(load_settings(env=env))
    try:
        stale = container.blobs.stale_temporaries(everywhere=True)
        orphans = list(container.archive.iter_orphans())
    finally:
        container.close()
    assert len(stale) >= 1

    listed = doctor(env, "--min-age", "0")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    text = re.sub(r"\s+", " ", listed.stdout)
    assert f"{len(stale)} left by an interrupted store" in text
    if orphans:
        assert f"{len(orphans)} stored file(s) the index does not reference" in text
        assert orphans[0] in listed.stdout
    else:
        assert "every stored file is indexed" in text

    repaired = doctor(env, "--repair", "--min-age", "0")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"Removed {len(stale)} temporary file(s)" in repaired.stdout
    assert f"of {len(orphans)} orphan file(s), indexed" in re.sub(r"\s+", " ", repaired.stdout)

    again = doctor(env)
    assert "none left behind" in again.stdout
    assert "every stored file is indexed" in again.stdout

    container = build(load_settings(env=env))
    try:
        assert container.blobs.stale_temporaries(everywhere=True) == []
        assert list(container.archive.iter_orphans()) == []
        # every acknowledged instance is indexed, and every indexed one has its file
        with container.db.read() as session:
            keys = imaging.all_blob_keys(session)
        assert all(container.blobs.exists(key) for key in keys)
        for sop in acknowledged:
            with container.db.read() as session:
                found = session.execute(
                    select(Instance.id).where(Instance.sop_instance_uid == sop)
                ).first()
            assert found is not None, f"acknowledged instance {sop} is not indexed"
    finally:
        container.close()
    assert acknowledged, "no C-STORE was acknowledged before the kills"
