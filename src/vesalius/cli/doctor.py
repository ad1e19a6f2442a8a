"""``vesalius doctor``: plain-language checks of everything Vesalius depends on.

Also lists what interrupted stores left behind (stale temporary files, stored files the index
does not reference) and, with ``--repair``, indexes or removes them.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import text

from vesalius import __version__
from vesalius.config import Settings, mask_url
from vesalius.container import Container
from vesalius.index.engine import Database
from vesalius.index.migrate import current_revision, head_revision

# An orphan younger than this may be an instance being stored right now (file written, rows
# not yet committed): `--repair` leaves it alone unless told otherwise.
DEFAULT_ORPHAN_AGE = 600.0
SHOWN = 20

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


def check_plugins(settings: Settings) -> list[Check]:
    """Every plugin can be imported (setting one up needs the archive: `serve` does that)."""
    from vesalius.plugins import PluginError, load

    try:
        loaded = load(settings)
    except PluginError as exc:
        return [Check("plugins", FAIL, str(exc))]
    names = [f"{p.name} ({p.source})" for p in loaded]
    return [Check("plugins", OK, ", ".join(names) if names else "none")]


CHECKS: list[Callable[[Settings], list[Check]]] = [
    check_versions,
    check_database,
    check_storage,
    check_ports,
    check_plugins,
]


@dataclass
class Leftovers:
    """Files an interrupted store left: temporaries no process writes, unindexed blobs."""

    temporaries: list[str]
    orphans: list[str]
    young_orphans: int


def find_leftovers(container: Container, min_age: float) -> Leftovers:
    stale = [str(p) for p in container.blobs.stale_temporaries(everywhere=True)]
    orphans = list(container.archive.iter_orphans())
    now = time.time()
    old = [k for k in orphans if now - container.archive.blob_mtime(k) >= min_age]
    return Leftovers(stale, old, len(orphans) - len(old))


def _open_for_leftovers(settings: Settings) -> Container | None:
    """The archive, if its index exists at this version (otherwise there is nothing to check)."""
    from vesalius.container import build

    try:
        container = build(settings, migrate=False)
    except Exception:
        return None
    try:
        if current_revision(container.db.engine) == head_revision():
            return container
    except Exception:
        pass
    container.close()
    return None


def check_leftovers(container: Container, found: Leftovers) -> list[Check]:
    checks = []
    if found.temporaries:
        checks.append(
            Check(
                "temporary files",
                WARN,
                f"{len(found.temporaries)} left by an interrupted store (in "
                f"{container.settings.effective_storage_dir}); `vesalius doctor --repair` "
                "removes them (`vesalius serve` does too when it starts)",
            )
        )
    else:
        checks.append(Check("temporary files", OK, "none left behind"))
    young = (
        f"; {found.young_orphans} more are recent (perhaps being stored now) and left alone"
        if found.young_orphans
        else ""
    )
    if found.orphans:
        checks.append(
            Check(
                "orphan files",
                WARN,
                f"{len(found.orphans)} stored file(s) the index does not reference{young}; "
                "`vesalius doctor --repair` indexes those that can be and removes the others",
            )
        )
    else:
        checks.append(Check("orphan files", OK, f"every stored file is indexed{young}"))
    return checks


def repair(container: Container, found: Leftovers, out: Console) -> tuple[int, int, int]:
    """Remove stale temporaries, index or remove orphans; returns (removed temporaries,
    indexed orphans, removed orphans)."""
    removed_temporaries = container.blobs.sweep_temporaries(everywhere=True)
    indexed = removed = 0
    reasons: list[tuple[str, str]] = []
    with Progress(
        TextColumn("Repairing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=out,
    ) as progress:
        task = progress.add_task("repair", total=len(found.orphans))
        for key in found.orphans:
            reason = container.archive.repair_orphan(key)
            if reason is None:
                indexed += 1
            else:
                removed += 1
                reasons.append((key, reason))
            progress.advance(task)
    if reasons:
        table = Table("stored file", "removed because", title="Orphan files removed")
        for key, reason in reasons[:SHOWN]:
            table.add_row(key, reason)
        if len(reasons) > SHOWN:
            table.add_row(f"... and {len(reasons) - SHOWN} more", "")
        out.print(table)
    return removed_temporaries, indexed, removed


def _list_leftovers(found: Leftovers, out: Console) -> None:
    if not (found.temporaries or found.orphans):
        return
    table = Table("file", "kind", title="Left behind by interrupted stores")
    rows = [(p, "temporary") for p in found.temporaries] + [(k, "orphan") for k in found.orphans]
    for name, kind in rows[:SHOWN]:
        table.add_row(name, kind)
    if len(rows) > SHOWN:
        table.add_row(f"... and {len(rows) - SHOWN} more", "")
    out.print(table)


def run_doctor(
    settings: Settings, out: Console, *, fix: bool = False, min_age: float = DEFAULT_ORPHAN_AGE
) -> int:
    results = [c for check in CHECKS for c in check(settings)]
    container = _open_for_leftovers(settings)
    found: Leftovers | None = None
    try:
        if container is not None:
            found = find_leftovers(container, min_age)
            results += check_leftovers(container, found)
        table = Table("check", "status", "detail")
        colours = {OK: "green", WARN: "yellow", FAIL: "red"}
        for c in results:
            table.add_row(c.name, f"[{colours[c.status]}]{c.status}[/]", c.detail)
        out.print(table)
        if found is not None:
            _list_leftovers(found, out)
            if fix and container is not None:
                temporaries, indexed, removed = repair(container, found, out)
                out.print(
                    f"Removed {temporaries} temporary file(s); of {len(found.orphans)} orphan "
                    f"file(s), indexed {indexed} and removed {removed}."
                )
                results = [c for c in results if c.name not in ("temporary files", "orphan files")]
        elif fix:
            out.print("Nothing to repair: the index is not created yet or does not answer.")
    finally:
        if container is not None:
            container.close()
    problems = [c for c in results if c.status == FAIL]
    out.print(
        "Everything looks right." if not problems else f"{len(problems)} problem(s) need attention."
    )
    return 1 if problems else 0
