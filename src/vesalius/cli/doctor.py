"""``vesalius doctor``: plain-language checks of everything Vesalius depends on."""

from __future__ import annotations

import shutil
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from vesalius import __version__
from vesalius.config import Settings, mask_url
from vesalius.index.engine import Database
from vesalius.index.migrate import current_revision, head_revision

OK, WARN, FAIL = "ok", "warning", "problem"


@dataclass
class Check:
    name: str
    status: str
    detail: str


def check_database(settings: Settings) -> list[Check]:
    url = settings.effective_database_url
    shown = mask_url(url)
    try:
        db = Database(url)
    except Exception as exc:
        return [Check("database", FAIL, f"{shown}: cannot use this URL: {exc}")]
    try:
        with db.engine.connect() as conn:
            conn.execute(text("select 1"))
            server = db.engine.dialect.server_version_info
        checks = [
            Check(
                "database",
                OK,
                f"{shown} answers ({db.engine.dialect.name} {'.'.join(map(str, server or ()))})",
            )
        ]
        current, head = current_revision(db.engine), head_revision()
        if current == head:
            checks.append(Check("schema", OK, f"at revision {current}"))
        elif current is None and url.startswith("sqlite"):
            checks.append(Check("schema", OK, "empty; `vesalius serve` will create it"))
        else:
            checks.append(
                Check(
                    "schema",
                    FAIL,
                    f"at {current or 'nothing'}, needs {head}: run `vesalius db upgrade`",
                )
            )
        return checks
    except Exception as exc:
        first = str(exc).splitlines()[0]
        return [
            Check(
                "database",
                FAIL,
                f"{shown} does not answer: {first}. Is the database "
                "server running, and do the user, password and database name exist?",
            )
        ]
    finally:
        db.dispose()


def check_storage(settings: Settings) -> list[Check]:
    folder = settings.effective_storage_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".doctor-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return [
            Check(
                "storage",
                FAIL,
                f"cannot write in {folder}: {exc.strerror}. Check the "
                "folder's owner and permissions, or set VESALIUS_DATA_DIR",
            )
        ]
    free = shutil.disk_usage(folder).free
    status = OK if free > 5 * 1024**3 else WARN
    advice = "" if status == OK else " (less than 5 GiB: free some space soon)"
    return [
        Check("storage", status, f"{folder} is writable; {free / 1024**3:.1f} GiB free{advice}")
    ]


def _port_check(name: str, host: str, port: int, variable: str) -> Check:
    if port == 0:
        return Check(name, OK, "port 0: an ephemeral port is chosen at start")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return Check(
                name,
                WARN,
                f"{host}:{port} is in use or not allowed ({exc.strerror}): "
                f"Vesalius may already be running; otherwise set {variable}",
            )
    return Check(name, OK, f"{host}:{port} is free")


def check_ports(settings: Settings) -> list[Check]:
    checks = [
        _port_check("DICOM port", settings.dicom_host, settings.dicom_port, "VESALIUS_DICOM_PORT")
    ]
    if settings.http_enabled:
        checks.append(
            _port_check("HTTP port", settings.http_host, settings.http_port, "VESALIUS_HTTP_PORT")
        )
    return checks


def check_versions(_settings: Settings) -> list[Check]:
    parts = [f"vesalius {__version__}", f"python {sys.version.split()[0]}"]
    parts += [f"{name} {version(name)}" for name in ("pydicom", "pynetdicom", "sqlalchemy")]
    status = OK if sys.version_info >= (3, 11) else FAIL
    return [Check("versions", status, ", ".join(parts))]


CHECKS: list[Callable[[Settings], list[Check]]] = [
    check_versions,
    check_database,
    check_storage,
    check_ports,
]


def run_doctor(settings: Settings, out: Console) -> int:
    results = [c for check in CHECKS for c in check(settings)]
    table = Table("check", "status", "detail")
    colours = {OK: "green", WARN: "yellow", FAIL: "red"}
    for c in results:
        table.add_row(c.name, f"[{colours[c.status]}]{c.status}[/]", c.detail)
    out.print(table)
    problems = [c for c in results if c.status == FAIL]
    out.print(
        "Everything looks right." if not problems else f"{len(problems)} problem(s) need attention."
    )
    return 1 if problems else 0
