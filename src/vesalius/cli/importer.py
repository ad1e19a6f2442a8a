"""``vesalius import``: store files, folders and zip archives, with a progress bar and a report."""

from __future__ import annotations

import contextlib
import csv
import logging
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
    # Every file in the order it was met: (file, outcome, reason); outcome is stored,
    # duplicate or rejected.
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def reject(self, label: str, reason: str) -> None:
        self.rejected.append((label, reason))
        self.rows.append((label, "rejected", reason))

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "outcome", "reason"])
            writer.writerows(self.rows)


def explain(reason: str, data: bytes | None) -> str:
    """The reason of a refusal in Vesalius's words: what is wrong, and what to do.

    The archive's own reasons are kept; a reader library's message (pydicom's "use
    force=True", which an importing user cannot) is replaced by what the bytes show.
    """
    if reason.endswith("is missing or empty"):
        return f"{reason}: every archived instance needs it; fix the file or leave it out"
    if not reason.startswith(_UNREADABLE):
        return reason
    if data is not None and not data:
        return "the file is empty; copy it again from its source"
    if data is not None and len(data) < 132:
        return (
            f"not a DICOM file: only {len(data)} bytes, too short for a DICOM header; "
            "copy it again from its source"
        )
    if data is not None and data[128:132] != b"DICM":
        return (
            "not a DICOM file: no 'DICM' marker at byte 128 and no DICOM element at its start "
            "(a report, an image or a text file?); leave it out of the import"
        )
    return (
        "a damaged DICOM file: its header cannot be read (cut short while copying?); "
        "copy it again from its source"
    )


_UNREADABLE = "not a readable DICOM file"


def discover(paths: list[Path], report: Report) -> Iterator[Source]:
    """Every file under *paths*; zip files are opened and their members listed."""
    for path in paths:
        if not path.exists():
            report.reject(str(path), "no such file or folder; check the path")
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
                    report.reject(str(file), f"a damaged zip file ({exc}); copy it again")
                continue
            yield Source(str(file), file, None, file.stat().st_size)


def _head(source: Source) -> bytes | None:
    """The first 132 bytes of a file (preamble and DICM), to say why it is not DICOM."""
    try:
        if source.member is None:
            with open(source.path, "rb") as fh:
                return fh.read(132)
        with zipfile.ZipFile(source.path) as archive, archive.open(source.member) as fh:
            return fh.read(132)
    except (OSError, zipfile.BadZipFile, KeyError):
        return None


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
            report.reject(source.label, explain(str(exc), _head(source)))
        except OSError as exc:
            report.reject(source.label, f"cannot be read ({exc.strerror or exc}); check it")
        else:
            key = (
                "stored"
                if outcome.status in (StoreStatus.STORED, StoreStatus.REPLACED)
                else "duplicate"
            )
            report.counts[key] += 1
            report.rows.append((source.label, key, ""))
        if progress is not None and task is not None:
            progress.advance(task)


@contextlib.contextmanager
def _quiet_readers() -> Iterator[None]:
    """No reader library warnings on the terminal: each file's fate is in the report."""
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_log.setLevel(level)


def run_import(
    settings: Settings, paths: list[Path], out: Console, report_file: Path | None = None
) -> int:
    container = open_container(settings)
    report = Report()
    try:
        with _quiet_readers():
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
    if report_file is not None:
        report.write_csv(report_file)
        out.print(f"The full list is in {report_file}.", soft_wrap=True, highlight=False)
    if report.rejected:
        # One block per file, its name whole on its own line (never cut to the terminal).
        out.print("Rejected:")
        for label, reason in report.rejected:
            out.print(f"  {label}", soft_wrap=True, highlight=False, markup=False)
            out.print(f"    {reason}", highlight=False, markup=False)
        return 1
    return 0
