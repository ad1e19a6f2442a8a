"""``vesalius import``: store files, folders and zip archives, with a progress bar and a report."""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vesalius.archive.parse import Part10Writer
from vesalius.archive.service import Archive, StoreOutcome, StoreStatus
from vesalius.cli.serve import open_container
from vesalius.config import Settings
from vesalius.errors import InvalidInstance

# A zip member larger than this, or that expands more than this ratio, is refused without
# being read: a zip bomb, or not a DICOM file.
MAX_MEMBER_BYTES = 2 * 1024**3
MAX_MEMBER_RATIO = 500
CHUNK = 1 << 20


@dataclass
class Source:
    """One file to import: a path on disk or a member of a zip archive."""

    label: str
    path: Path
    member: str | None = None
    size: int = 0

    def write_to(self, out: Part10Writer) -> None:
        """Stream the file (or the zip member) into *out*, a chunk at a time."""
        if self.member is None:
            with open(self.path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    out.write(chunk)
            return
        with zipfile.ZipFile(self.path) as archive:
            info = archive.getinfo(self.member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise InvalidInstance(f"member is {info.file_size} bytes, over the import limit")
            if info.file_size > MAX_MEMBER_RATIO * max(info.compress_size, 1):
                raise InvalidInstance(
                    f"member expands {info.file_size // max(info.compress_size, 1)} times "
                    "(a zip bomb?); refused"
                )
            read = 0
            with archive.open(info) as fh:
                while chunk := fh.read(CHUNK):
                    read += len(chunk)
                    if read > info.file_size:
                        raise InvalidInstance("member is larger than it declares; refused")
                    out.write(chunk)


@dataclass
class Report:
    counts: Counter[str] = field(default_factory=Counter)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def discover(paths: list[Path], report: Report) -> Iterator[Source]:
    """Every file under *paths*; zip files are opened and their members listed."""
    for path in paths:
        if not path.exists():
            report.rejected.append((str(path), "no such file or folder"))
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.name.startswith("."):
                continue
            if zipfile.is_zipfile(file):
                try:
                    with zipfile.ZipFile(file) as archive:
                        for info in archive.infolist():
                            if not info.is_dir():
                                yield Source(
                                    f"{file}!{info.filename}", file, info.filename, info.file_size
                                )
                except (zipfile.BadZipFile, OSError) as exc:
                    report.rejected.append((str(file), f"unreadable zip file: {exc}"))
                continue
            yield Source(str(file), file, None, file.stat().st_size)


def store_source(archive: Archive, source: Source) -> StoreOutcome:
    """Stream one file into a spool and archive it; nothing of it is held in memory whole."""
    spool = archive.blobs.spool()
    with spool:
        writer = Part10Writer(spool)
        source.write_to(writer)
        writer.close()
    return archive.store_spool(spool, origin=f"import:{source.label}"[:255])


def import_sources(
    archive: Archive, sources: list[Source], report: Report, progress: Progress | None = None
) -> None:
    task = progress.add_task("Importing", total=len(sources)) if progress else None
    for source in sources:
        try:
            outcome = store_source(archive, source)
        except InvalidInstance as exc:
            report.rejected.append((source.label, str(exc)))
        except OSError as exc:
            report.rejected.append((source.label, f"cannot read: {exc}"))
        else:
            key = (
                "stored"
                if outcome.status in (StoreStatus.STORED, StoreStatus.REPLACED)
                else "duplicate"
            )
            report.counts[key] += 1
        if progress is not None and task is not None:
            progress.advance(task)


def run_import(settings: Settings, paths: list[Path], out: Console) -> int:
    container = open_container(settings)
    report = Report()
    try:
        sources = list(discover(paths, report))
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=out,
            transient=False,
        ) as progress:
            import_sources(container.archive, sources, report, progress)
    finally:
        container.close()
    out.print(
        f"Stored {report.counts['stored']}, duplicates {report.counts['duplicate']}, "
        f"rejected {len(report.rejected)}."
    )
    if report.rejected:
        table = Table("file", "reason", title="Rejected")
        for label, reason in report.rejected:
            table.add_row(label, reason)
        out.print(table)
        return 1
    return 0
