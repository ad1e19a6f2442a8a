"""The install scripts that ``make`` runs: the choice of interpreter (``scripts/pick-python``)
and the unpacking of the viewer's tarball (``scripts/fetch-viewer``), on every Python it may
run on: with tarfile's ``data`` filter (3.11.4 and later) and without it (Debian 12's 3.11.2)."""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import io
import subprocess
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_pick_python_names_a_python_that_can_make_the_venv() -> None:
    chosen = subprocess.run(
        [SCRIPTS / "pick-python"], capture_output=True, text=True, check=True
    ).stdout.strip()
    probe = subprocess.run(
        [chosen, "-c", "import sys, venv, ensurepip; print(sys.version_info[:2] >= (3, 11))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "True"


def _fetch_viewer() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("fetch_viewer", str(SCRIPTS / "fetch-viewer"))
    spec = importlib.util.spec_from_loader("fetch_viewer", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _tarball(path: Path, entries: list[tarfile.TarInfo]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for entry in entries:
            data = b"<html></html>" if entry.isfile() else b""
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data) if entry.isfile() else None)


def _entry(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type = kind
    entry.linkname = target
    return entry


@pytest.fixture(params=["as this Python has it", "no data filter"])
def fetch_viewer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    if request.param == "no data filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return _fetch_viewer()


def test_fetch_viewer_unpacks_plain_files(fetch_viewer: ModuleType, tmp_path: Path) -> None:
    _tarball(tmp_path / "p.tgz", [_entry("package/dist/index.html")])
    dest = tmp_path / "out"
    with tarfile.open(tmp_path / "p.tgz") as archive:
        for member in archive.getmembers():
            fetch_viewer.extract(archive, member, str(dest))
    assert (dest / "package" / "dist" / "index.html").read_bytes() == b"<html></html>"


@pytest.mark.parametrize(
    "entry",
    [
        _entry("../outside.html"),
        _entry("/tmp/absolute.html"),
        _entry("package/link", tarfile.SYMTYPE, "/etc/passwd"),
        _entry("package/hard", tarfile.LNKTYPE, "../../etc/passwd"),
    ],
    ids=["parent path", "absolute path", "symlink out", "hard link out"],
)
def test_fetch_viewer_refuses_entries_that_leave_its_folder(
    fetch_viewer: ModuleType, tmp_path: Path, entry: tarfile.TarInfo
) -> None:
    _tarball(tmp_path / "p.tgz", [entry])
    dest = tmp_path / "deep" / "out"
    dest.mkdir(parents=True)
    with tarfile.open(tmp_path / "p.tgz") as archive:
        for member in archive.getmembers():
            # refused (the fallback always, the data filter mostly), or kept inside *dest*
            with contextlib.suppress(SystemExit, tarfile.TarError):
                fetch_viewer.extract(archive, member, str(dest))
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents]
    assert outside == [tmp_path / "p.tgz"]
    assert not Path("/tmp/absolute.html").exists()
    inside = list(dest.rglob("*"))
    assert not any(p.is_symlink() for p in inside)
    assert all(p.read_bytes() == b"<html></html>" for p in inside if p.is_file())
