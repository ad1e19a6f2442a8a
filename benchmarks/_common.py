"""Shared helpers for the Vesalius benchmarks: test data, DCMTK calls and server processes.

Everything here talks to servers on the loopback interface only. Servers are started as child
processes in their own session and stopped by their PID (and, if the PID does not go away, by
the process group that session created), never by name.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
SCU_AET = "BENCHSCU"
DEFAULT_DCMTK_DIR = Path("/usr/bin")
DEFAULT_ORTHANC = Path("/usr/sbin/Orthanc")
ORTHANC_PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
DCMTK_TOOLS = ("echoscu", "storescu", "findscu", "getscu")
# Network timeouts (seconds) passed to every DCMTK call: connect, ACSE, DIMSE.
DCMTK_TIMEOUTS = ("-to", "10", "-ta", "30", "-td", "300")


class BenchError(RuntimeError):
    """A problem that stops the benchmark; the message says what to do about it."""


# --------------------------------------------------------------------------------------------
# Small utilities


def server_folder(workdir: Path, prefix: str) -> Path:
    """A fresh folder for one server's files, made in *workdir*.

    *workdir* is first marked as a top of directory hierarchies (``chattr +T``, ext2/3/4), so
    that the kernel places each server's folder in a block group of its own instead of next to
    the folders of the rounds before. Why: on ext4 without a journal (this project's
    development machine) creating a file first skips the inodes freed in the last minutes of
    its block group one by one, and every round deletes thousands: creates cost 280-460 µs
    there against 20 µs in a fresh group (measured), a cost of the benchmark's own clean-up
    that a server pays per file and directory it creates. Elsewhere the mark is harmless or
    refused; a refusal is ignored.
    """
    with contextlib.suppress(OSError):
        subprocess.run(["chattr", "+T", str(workdir)], capture_output=True, check=False)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))


def free_ports(count: int) -> list[int]:
    """Return *count* distinct TCP ports that are free on the loopback interface right now."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tail(path: Path, lines: int = 30) -> str:
    """The last *lines* lines of a text file ('' if it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def mask_url(url: str) -> str:
    """A database URL with its password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, at, host = rest.rpartition("@")
    user, colon, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}{at}{host}"


def tree_size(path: Path) -> tuple[int, int]:
    """(number of files, total bytes) below *path*."""
    files = 0
    size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(root, name))
    return files, size


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds of a process and its child processes (``vesalius serve``'s workers), and
    the machine's busy and total CPU seconds, at one moment (see :func:`cpu_times`)."""

    user: float
    system: float
    machine_busy: float
    machine_total: float

    def __sub__(self, earlier: CpuTimes) -> CpuTimes:
        return CpuTimes(
            self.user - earlier.user,
            self.system - earlier.system,
            self.machine_busy - earlier.machine_busy,
            self.machine_total - earlier.machine_total,
        )

    @property
    def seconds(self) -> float:
        """User + system."""
        return self.user + self.system

    @property
    def busy_share(self) -> float:
        """The share of the machine's CPU time (all cores) that was not idle."""
        return self.machine_busy / self.machine_total if self.machine_total else 0.0


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return fh.read().rpartition(")")[2].split()  # fields from the 3rd (state) on


def family(pid: int) -> list[int]:
    """*pid* and its live child processes (a server and its workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            try:
                if int(_stat_fields(int(entry))[1]) == pid:
                    pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue  # exited meanwhile
    return pids


def cpu_times(pid: int) -> CpuTimes:
    """utime and stime of *pid* and of its live child processes (all their threads), and the
    machine's CPU counters from /proc/stat. Take two and subtract: a child that exits in
    between takes its time with it, which a server's workers do not do."""
    user = system = 0
    for each in family(pid):
        try:
            fields = _stat_fields(each)
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    with open("/proc/stat", encoding="ascii") as fh:
        counters = [int(v) for v in fh.readline().split()[1:]]
    idle = counters[3] + counters[4]  # idle, iowait
    total = sum(counters[:8])  # guest time is already counted in user
    return CpuTimes(
        user / _CLOCK_TICKS, system / _CLOCK_TICKS,
        (total - idle) / _CLOCK_TICKS, total / _CLOCK_TICKS,
    )  # fmt: skip


def first_line(cmd: Sequence[str], timeout: float = 10.0) -> str:
    """First non-empty output line of a command (used for version strings), '' on failure."""
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            return line.strip()
    return ""


# --------------------------------------------------------------------------------------------
# DCMTK


@dataclass(frozen=True)
class Endpoint:
    """Where a running server listens."""

    aet: str
    host: str
    port: int
    http_port: int | None = None

    @property
    def http_url(self) -> str | None:
        return None if self.http_port is None else f"http://{self.host}:{self.http_port}"


@dataclass(frozen=True)
class Dcmtk:
    """The DCMTK command line tools (by absolute path: pynetdicom installs look-alikes)."""

    bindir: Path
    tcp_nodelay: bool = True

    @classmethod
    def locate(cls, bindir: Path = DEFAULT_DCMTK_DIR, tcp_nodelay: bool = True) -> Dcmtk:
        missing = [t for t in DCMTK_TOOLS if not os.access(bindir / t, os.X_OK)]
        if missing:
            raise BenchError(
                f"DCMTK tool(s) {', '.join(missing)} not found in {bindir}. "
                "Install them with: sudo apt-get install dcmtk"
            )
        version = first_line([str(bindir / "storescu"), "--version"])
        if "dcmtk" not in version.lower():
            raise BenchError(
                f"{bindir / 'storescu'} is not DCMTK's storescu (got {version!r}); pynetdicom "
                "installs a script of the same name. Point --dcmtk-dir at DCMTK (apt package "
                "dcmtk, usually /usr/bin)."
            )
        return cls(bindir, tcp_nodelay)

    @property
    def env(self) -> dict[str, str]:
        """Environment for the tools: see :func:`dcmtk_env`."""
        return dcmtk_env(self.tcp_nodelay)

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def version(self) -> str:
        return first_line([self.tool("storescu"), "--version"]).strip("$ ")

    def _peer(self, endpoint: Endpoint) -> list[str]:
        return ["-aet", SCU_AET, "-aec", endpoint.aet, *DCMTK_TIMEOUTS]

    def echo_cmd(self, endpoint: Endpoint) -> list[str]:
        return [
            self.tool("echoscu"), "-aet", SCU_AET, "-aec", endpoint.aet,
            "-to", "2", "-ta", "5", "-td", "5", endpoint.host, str(endpoint.port),
        ]  # fmt: skip

    def store_cmd(self, endpoint: Endpoint, folder: Path) -> list[str]:
        return [
            self.tool("storescu"), *self._peer(endpoint), "+sd", "+r",
            endpoint.host, str(endpoint.port), str(folder),
        ]  # fmt: skip

    def find_cmd(
        self, endpoint: Endpoint, keys: Mapping[str, str], extract_dir: Path | None = None
    ) -> list[str]:
        cmd = [self.tool("findscu"), "-S", *self._peer(endpoint)]
        for key, value in keys.items():
            cmd += ["-k", f"{key}={value}" if value else key]
        if extract_dir is not None:
            cmd += ["-X", "-od", str(extract_dir)]
        return [*cmd, endpoint.host, str(endpoint.port)]

    def get_cmd(self, endpoint: Endpoint, study_uid: str, out_dir: Path) -> list[str]:
        return [
            self.tool("getscu"), "-S", *self._peer(endpoint), "-pdu", "131072",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
            "-od", str(out_dir), endpoint.host, str(endpoint.port),
        ]  # fmt: skip

    def echo(self, endpoint: Endpoint) -> bool:
        try:
            proc = subprocess.run(
                self.echo_cmd(endpoint), capture_output=True, timeout=15, check=False, env=self.env
            )
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0


def dcmtk_env(tcp_nodelay: bool) -> dict[str, str]:
    """The current environment, with DCMTK's Nagle switch set as asked.

    Debian's DCMTK (3.6.2 and later) leaves Nagle's algorithm on unless TCP_NODELAY=1 is in the
    environment; with it on, every request/response exchange on loopback can stall for the
    40 ms delayed-ACK timer. Upstream Orthanc builds DCMTK with Nagle disabled.
    """
    env = dict(os.environ)
    if tcp_nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    return env


def run_tool(
    cmd: Sequence[str], timeout: float, what: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool to completion; raise BenchError on failure or timeout."""
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"{what} did not finish within {timeout:.0f} s: {shlex.join(cmd)}"
        ) from None
    if proc.returncode != 0:
        output = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise BenchError(
            f"{what} failed with exit code {proc.returncode}: {shlex.join(cmd)}\n{output}"
        )
    return proc


def run_parallel(
    cmds: Sequence[Sequence[str]],
    timeout: float,
    log_dir: Path,
    what: str,
    env: Mapping[str, str] | None = None,
) -> float:
    """Run commands concurrently; return the wall time (s) from first start to last exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[subprocess.Popen[bytes], Path, Sequence[str]]] = []
    start = time.perf_counter()
    deadline = start + timeout
    try:
        for index, cmd in enumerate(cmds):
            log = log_dir / f"{what.replace(' ', '_')}-{index}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env)
            procs.append((proc, log, cmd))
        for proc, _log, cmd in procs:
            remaining = max(deadline - time.perf_counter(), 0.1)
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                raise BenchError(
                    f"{what} did not finish within {timeout:.0f} s: {shlex.join(cmd)}"
                ) from None
        elapsed = time.perf_counter() - start
    finally:
        for proc, _log, _cmd in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log, cmd in procs:
        if proc.returncode != 0:
            raise BenchError(
                f"{what} failed with exit code {proc.returncode}: {shlex.join(cmd)}\n{tail(log)}"
            )
    return elapsed


# --------------------------------------------------------------------------------------------
# Synthetic data


@dataclass
class StudyInfo:
    patient_id: str
    patient_name: str
    study_uid: str
    study_date: str
    instances: int = 0
    nbytes: int = 0


@dataclass
class GeneratedData:
    """A folder of DICOM files split into *parts* sub-folders (one per parallel sender)."""

    root: Path
    prefix: str
    parts: list[Path]
    part_instances: list[int]
    studies: list[StudyInfo]
    instances: int
    nbytes: int
    rows: int
    columns: int

    def studies_matching(
        self, name_pattern: str | None = None, date_range: tuple[str, str] | None = None
    ) -> list[StudyInfo]:
        """Studies a C-FIND with this PatientName wildcard / StudyDate range should return."""
        found = []
        for study in self.studies:
            if name_pattern is not None and not fnmatch.fnmatchcase(
                study.patient_name.upper(), name_pattern.upper()
            ):
                continue
            if date_range is not None and not date_range[0] <= study.study_date <= date_range[1]:
                continue
            found.append(study)
        return found

    def summary(self) -> dict[str, object]:
        return {
            "instances": self.instances,
            "bytes": self.nbytes,
            "patients": len({s.patient_id for s in self.studies}),
            "studies": len(self.studies),
            "rows": self.rows,
            "columns": self.columns,
            "parts": self.part_instances,
        }

    def batches(self, width: int) -> list[tuple[list[Path], int]]:
        """Consecutive groups of *width* part folders, with their number of instances."""
        return [
            (self.parts[i : i + width], sum(self.part_instances[i : i + width]))
            for i in range(0, len(self.parts), width)
        ]


def _phantom(rows: int, columns: int) -> np.ndarray:
    """A CT-like 12-bit image: air, a body ellipse and a few denser discs."""
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    cy, cx = rows / 2, columns / 2
    image = np.zeros((rows, columns), dtype=np.float32)  # air: -1024 HU stored as 0
    body = ((x - cx) / (0.42 * columns)) ** 2 + ((y - cy) / (0.34 * rows)) ** 2 <= 1
    image[body] = 1024 + 40  # soft tissue
    for fx, fy, r, value in ((0.35, 0.5, 0.08, 1024 + 700), (0.65, 0.5, 0.08, 1024 - 800)):
        disc = (x - fx * columns) ** 2 + (y - fy * rows) ** 2 <= (r * columns) ** 2
        image[disc] = value
    return image.astype(np.uint16)


def generate_data(
    root: Path,
    instances: int,
    *,
    prefix: str = "BENCH",
    rows: int = 512,
    columns: int = 512,
    instances_per_series: int = 50,
    series_per_study: int = 2,
    studies_per_patient: int = 2,
    first_date: date = date(2020, 1, 1),
    last_date: date = date(2024, 12, 31),
    parts: int = 4,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> GeneratedData:
    """Write *instances* CT images (explicit VR little endian, 16 bits allocated, 12 stored).

    Patients are named ``<prefix>^PATIENT0001`` and up; study dates are spread evenly over
    [first_date, last_date] and shuffled over the studies. Files go to ``root/part<k>``: whole
    studies round-robin when there are at least *parts* studies, otherwise instance by instance.
    UIDs are derived from *seed* and *prefix*, so the same arguments give the same data.
    """
    if instances < 1:
        raise BenchError("the data set needs at least one instance")
    per_study = instances_per_series * series_per_study
    n_studies = -(-instances // per_study)
    n_patients = -(-n_studies // studies_per_patient)
    width = max(4, len(str(n_patients)))
    rng = np.random.default_rng([seed, sum(prefix.encode())])
    span = (last_date - first_date).days
    offsets = rng.permutation([(j * span) // max(n_studies - 1, 1) for j in range(n_studies)])
    base = _phantom(rows, columns)

    def uid(*parts_: object) -> str:
        return generate_uid(prefix=None, entropy_srcs=[str(seed), prefix, *map(str, parts_)])

    part_dirs = [root / f"part{k:03d}" for k in range(parts)]
    part_counts = [0] * parts
    for d in part_dirs:
        d.mkdir(parents=True, exist_ok=True)
    studies: list[StudyInfo] = []
    total_bytes = 0
    written = 0
    by_study = n_studies >= parts
    for s in range(n_studies):
        p = s // studies_per_patient
        study_date = first_date + timedelta(days=int(offsets[s]))
        study = StudyInfo(
            patient_id=f"{prefix}{p + 1:0{width}d}",
            patient_name=f"{prefix}^PATIENT{p + 1:0{width}d}",
            study_uid=uid("study", s),
            study_date=study_date.strftime("%Y%m%d"),
        )
        studies.append(study)
        frame_uid = uid("frame", s)
        for r in range(series_per_study):
            series_uid = uid("series", s, r)
            for i in range(instances_per_series):
                if written == instances:
                    break
                ds = _ct_instance(
                    study=study,
                    study_index=s,
                    series_uid=series_uid,
                    series_number=r + 1,
                    instance_number=i + 1,
                    sop_uid=uid("instance", s, r, i),
                    frame_uid=frame_uid,
                    pixels=base + rng.integers(0, 48, size=base.shape, dtype=np.uint16),
                )
                k = (s if by_study else written) % parts
                path = part_dirs[k] / f"s{s:05d}_r{r:02d}_i{i:05d}.dcm"
                part_counts[k] += 1
                ds.save_as(path, enforce_file_format=True)
                size = path.stat().st_size
                study.instances += 1
                study.nbytes += size
                total_bytes += size
                written += 1
                if progress is not None:
                    progress(1)
    return GeneratedData(
        root=root,
        prefix=prefix,
        parts=[d for d, n in zip(part_dirs, part_counts, strict=True) if n],
        part_instances=[n for n in part_counts if n],
        studies=studies,
        instances=written,
        nbytes=total_bytes,
        rows=rows,
        columns=columns,
    )


def _ct_instance(
    *,
    study: StudyInfo,
    study_index: int,
    series_uid: str,
    series_number: int,
    instance_number: int,
    sop_uid: str,
    frame_uid: str,
    pixels: np.ndarray,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study.study_date
    ds.SeriesDate = study.study_date
    ds.ContentDate = study.study_date
    ds.StudyTime = f"{8 + study_index % 10:02d}{study_index % 60:02d}00"
    ds.SeriesTime = ds.StudyTime
    ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = f"ACC{study_index + 1:08d}"
    ds.Modality = "CT"
    ds.Manufacturer = "VESALIUS-BENCH"
    ds.InstitutionName = "Benchmark Hospital"
    ds.ReferringPhysicianName = "REFERRER^BENCH"
    ds.StudyDescription = "CT CHEST BENCHMARK"
    ds.SeriesDescription = f"AXIAL {series_number}"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = str(study_index + 1)
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [-250, -250, -float(instance_number)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_uid
    ds.SliceLocation = -float(instance_number)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = pixels.tobytes()
    return ds


# --------------------------------------------------------------------------------------------
# Server processes

_LIVE: set[ManagedProcess] = set()


class ManagedProcess:
    """A server child process in its own session, logged to a file, stopped by its PID."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        try:
            with self.log_path.open("wb") as log, _signals_deferred():
                self._proc = subprocess.Popen(
                    self.cmd,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_unblock_signals,
                )
                _LIVE.add(self)
        except OSError as exc:
            raise BenchError(f"cannot start {self.name} ({shlex.join(self.cmd)}): {exc}") from exc

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the PID and wait; SIGKILL its process group if it does not go away.

        Ctrl-C and SIGTERM to the benchmark are held back until the server is gone, so that an
        interrupt cannot leave it running (or unreaped).
        """
        proc = self._proc
        if proc is None:
            return
        with _signals_deferred():
            self._stop(proc, timeout)
        _LIVE.discard(self)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
        pgid = proc.pid  # start_new_session: the child leads a group with its own PID
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Helpers the server may have forked and left behind in its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
            time.sleep(0.5)
            os.killpg(pgid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)


_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Block interrupting signals for the duration; they are delivered when it ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _unblock_signals() -> None:
    """Run in a server's process before its exec: a blocked signal mask survives the exec, so
    without this every server started inside :func:`_signals_deferred` ignored the SIGTERM of
    :meth:`ManagedProcess.stop` and was killed 30 s later, at each stop of each round."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED_SIGNALS)


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=10)


BOUNDARY = "vesalius-bench-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def stow_body(files: Sequence[Path]) -> bytes:
    """A STOW-RS request body (multipart/related, :data:`STOW_TYPE`) holding *files*."""
    body = bytearray()
    for path in files:
        body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += path.read_bytes()
        body += b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    return bytes(body)


def in_requests(files: Sequence[Path], per_request: int) -> list[bytes]:
    """The STOW-RS bodies that post *files*, *per_request* to a request."""
    return [stow_body(files[i : i + per_request]) for i in range(0, len(files), per_request)]


def wait_http(url: str, headers: Mapping[str, str] | None = None, timeout: float = 60) -> None:
    """Wait until *url* answers below 500 (a server's HTTP side is up); BenchError after
    *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, headers=dict(headers or {}), timeout=5).status_code < 500:
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


@contextlib.contextmanager
def py_spy(
    pid: int | None, out: Path | None, *, fmt: str = "raw", rate: int = 250, gil: bool = False
) -> Iterator[None]:
    """``py-spy record`` of *pid* and its worker processes into *out* while the block runs.

    Nothing is recorded when *out* or *pid* is None or py-spy is not installed. ``--nonblocking``
    (the server is not paused to be sampled); *fmt* ``raw`` writes collapsed stacks (read them
    with ``profile_top.py``), ``speedscope`` a file for speedscope.app; with *gil* only the
    thread holding the GIL is sampled (Python's own CPU, no waits).
    """
    beside = Path(sys.executable).parent / "py-spy"  # the venv's, when PATH does not have it
    binary = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
    if out is None or pid is None or binary is None:
        yield
        return
    with _recording(
        [binary, "record", "--nonblocking", "--subprocesses", "--pid", str(pid),
         "--rate", str(rate), "--format", fmt, "--output", str(out),
         *(["--gil"] if gil else [])],
        settle=1.0,  # let it attach
        finish=60,
    ):  # fmt: skip
        yield


@contextlib.contextmanager
def perf_record(out: Path | None, *, rate: int = 999) -> Iterator[None]:
    """``perf record`` of the whole machine (every process, the kernel, call graphs) into
    *out* while the block runs; nothing when *out* is None or perf is not installed.

    py-spy sees Python frames only: time spent in a C library (hashing, SQLite) or in the
    kernel (page-cache writes, file creation) is charged to the Python line that called it.
    perf shows it by library and kernel function. Read the file with, for example,
    ``perf report -i OUT --no-children -g none --sort comm,dso`` (by process and library) or
    ``--children --comm python --sort sym`` (what the servers' system calls do).
    """
    binary = shutil.which("perf")
    if out is None or binary is None:
        yield
        return
    with _recording(
        [binary, "record", "-a", "-g", "-F", str(rate), "-o", str(out)], settle=0.5, finish=120
    ):
        yield


@contextlib.contextmanager
def _recording(command: list[str], *, settle: float, finish: float) -> Iterator[None]:
    """Run a recorder (py-spy, perf) while the block runs: started, given *settle* seconds
    to attach, stopped with SIGINT at the end (so it writes its file), killed after *finish*
    seconds of writing."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(settle)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=finish)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_echo(
    dcmtk: Dcmtk, endpoint: Endpoint, proc: ManagedProcess, timeout: float
) -> float:
    """Poll with C-ECHO until the server answers; return the start-up time (s)."""
    start = time.perf_counter()
    deadline = start + timeout
    while True:
        code = proc.exit_code()
        if code is not None:
            raise BenchError(
                f"{proc.name} exited with code {code} while starting "
                f"({shlex.join(proc.cmd)}). Last log lines:\n{proc.log_tail()}"
            )
        if dcmtk.echo(endpoint):
            return time.perf_counter() - start
        if time.perf_counter() > deadline:
            raise BenchError(
                f"{proc.name} did not answer C-ECHO on {endpoint.host}:{endpoint.port} "
                f"(AE {endpoint.aet}) within {timeout:.0f} s. Last log lines:\n{proc.log_tail()}"
            )
        time.sleep(0.25)


@dataclass
class OrthancLauncher:
    """Starts a throw-away Orthanc with its own config, storage and index in a temp folder.

    Orthanc keeps its Debian defaults except for what a loopback benchmark needs: the
    benchmark's SCU is the only known modality (C-FIND and C-GET allowed, host checked),
    plugins are off unless given, HTTP is off unless asked for. With *tcp_nodelay* (default)
    Orthanc runs with TCP_NODELAY=1 so that Debian's shared DCMTK disables Nagle's algorithm,
    as the upstream Orthanc builds do.
    """

    binary: Path
    dcmtk: Dcmtk
    workdir: Path
    aet: str = "ORTHANC"
    plugins: Sequence[Path] = ()
    http: bool = False
    extra_config: Mapping[str, object] = field(default_factory=dict)
    tcp_nodelay: bool = True
    startup_timeout: float = 60.0
    key: str = "orthanc"
    label: str = "Orthanc"
    _proc: ManagedProcess | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        """The running server's process ID (for its CPU time in /proc), None when stopped."""
        return None if self._proc is None else self._proc.pid

    @staticmethod
    def locate(binary: Path = DEFAULT_ORTHANC) -> Path:
        if os.access(binary, os.X_OK):
            return binary
        found = shutil.which("Orthanc") if binary == DEFAULT_ORTHANC else None
        if found:
            return Path(found)
        raise BenchError(
            f"Orthanc not found at {binary}. Install it with: "
            "sudo apt-get install orthanc (then stop the packaged service if you do not want it; "
            "the benchmark runs its own instance)"
        )

    def version(self) -> str:
        return first_line([str(self.binary), "--version"])

    @contextlib.contextmanager
    def run(self) -> Iterator[Endpoint]:
        instance_dir = server_folder(self.workdir, "orthanc-")
        proc: ManagedProcess | None = None
        try:
            dicom_port, http_port, scu_port = free_ports(3)
            config: dict[str, object] = {
                "Name": "vesalius-benchmark",
                "StorageDirectory": str(instance_dir / "storage"),
                "IndexDirectory": str(instance_dir / "index"),
                "Plugins": [str(p) for p in self.plugins],
                "HttpServerEnabled": self.http,
                "HttpPort": http_port,
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "DicomServerEnabled": True,
                "DicomAet": self.aet,
                "DicomPort": dicom_port,
                "DicomCheckCalledAet": False,
                "DicomAlwaysAllowEcho": False,
                "DicomAlwaysAllowStore": False,
                "DicomAlwaysAllowFind": False,
                "DicomAlwaysAllowGet": False,
                "DicomAlwaysAllowMove": False,
                "DicomCheckModalityHost": True,
                "DicomModalities": {
                    "benchscu": {"AET": SCU_AET, "Host": LOOPBACK, "Port": scu_port},
                },
                "SaveJobs": False,
            }
            config.update(self.extra_config)
            config_path = instance_dir / "orthanc.json"
            config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
            proc = ManagedProcess(
                "Orthanc",
                [str(self.binary), str(config_path)],
                instance_dir / "orthanc.log",
                cwd=instance_dir,
                env=dcmtk_env(self.tcp_nodelay),
            )
            proc.start()
            self._proc = proc
            endpoint = Endpoint(self.aet, LOOPBACK, dicom_port, http_port if self.http else None)
            wait_until_echo(self.dcmtk, endpoint, proc, self.startup_timeout)
            yield endpoint
        finally:
            self._proc = None
            if proc is not None:
                proc.stop()
            shutil.rmtree(instance_dir, ignore_errors=True)


def find_orthanc_plugin(name: str = "libOrthancDicomWeb.so") -> Path:
    """The path of an Orthanc plugin shipped by Debian (e.g. orthanc-dicomweb)."""
    for folder in ORTHANC_PLUGIN_DIRS:
        for candidate in sorted(folder.glob(f"{name}*")):
            if candidate.is_file():
                return candidate
    raise BenchError(
        f"Orthanc plugin {name} not found in {', '.join(map(str, ORTHANC_PLUGIN_DIRS))}. "
        "For DICOMweb install it with: sudo apt-get install orthanc-dicomweb"
    )


def default_vesalius_command() -> list[str]:
    venv_exe = REPO_ROOT / ".venv" / "bin" / "vesalius"
    return [str(venv_exe if venv_exe.exists() else "vesalius"), "serve"]


def check_resettable(url: str) -> None:
    """Raise BenchError unless :func:`reset_database` can (and may) empty this database."""
    scheme = url.split(":", 1)[0]
    if scheme.startswith("sqlite"):
        return
    if not scheme.startswith("postgresql"):
        raise BenchError(
            f"cannot empty a {scheme} database between runs; use PostgreSQL or SQLite, or pass "
            "--no-db-reset (then every start after the first finds the data of the last one)"
        )
    dbname = unquote(urlsplit("postgresql://" + url.split("://", 1)[1]).path.lstrip("/"))
    if not dbname or dbname in {"postgres", "template0", "template1"}:
        raise BenchError(
            f"refusing to drop database {dbname!r}: give a dedicated database in the URL, "
            "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/vesbench"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise BenchError(
            "resetting a PostgreSQL database needs psycopg: pip install 'psycopg[binary]'"
        ) from None


def reset_database(url: str) -> None:
    """Empty the index database Vesalius is pointed at, so each server start begins empty.

    PostgreSQL: DROP DATABASE ... WITH (FORCE) and CREATE DATABASE (connected to the
    'postgres' maintenance database). SQLite: delete the file. Other back ends: not supported.
    """
    check_resettable(url)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    Path(path + suffix).unlink()
        return
    import psycopg
    from psycopg import sql

    parts = urlsplit("postgresql://" + url.split("://", 1)[1])
    dbname = unquote(parts.path.lstrip("/"))
    conninfo = {
        "host": parts.hostname or LOOPBACK,
        "port": parts.port or 5432,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "dbname": "postgres",
        "connect_timeout": 10,
    }
    try:
        with psycopg.connect(
            autocommit=True, **{k: v for k, v in conninfo.items() if v is not None}
        ) as conn:
            ident = sql.Identifier(dbname)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    except psycopg.Error as exc:
        raise BenchError(f"cannot reset database {mask_url(url)}: {exc}") from exc


@dataclass
class VesaliusLauncher:
    """Starts ``vesalius serve`` with a fresh data folder (and, optionally, a fresh database).

    With a server database (*database_url* not SQLite), *migrate_command* (by default the
    serve command with ``serve`` replaced by ``db upgrade``) creates the schema first, since
    ``vesalius serve`` only migrates its embedded SQLite index by itself.
    """

    command: Sequence[str]
    dcmtk: Dcmtk
    workdir: Path
    aet: str = "VESALIUS"
    database_url: str | None = None
    reset_db: bool = True
    log_level: str = "WARNING"
    workers: int = 1  # VESALIUS_WORKERS: processes sharing the ports
    extra_env: Mapping[str, str] = field(default_factory=dict)
    migrate_command: Sequence[str] | None = None
    startup_timeout: float = 60.0
    key: str = "vesalius"
    label: str = "Vesalius"
    _env: dict[str, str] | None = field(default=None, init=False, repr=False)
    _proc: ManagedProcess | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        """The running server's process ID (for its CPU time in /proc), None when stopped."""
        return None if self._proc is None else self._proc.pid

    def check(self) -> None:
        exe = self.command[0]
        if not (os.access(exe, os.X_OK) or shutil.which(exe)):
            raise BenchError(
                f"Vesalius command {exe!r} not found. Install the project in the venv "
                "(.venv/bin/pip install -e .), pass --vesalius-cmd, or run only Orthanc with "
                "--servers orthanc"
            )
        if self.database_url and self.reset_db:
            check_resettable(self.database_url)

    def _migrate(self, env: Mapping[str, str], instance_dir: Path) -> None:
        cmd = list(self.migrate_command or [])
        if not cmd:
            if self.command[-1] != "serve":
                raise BenchError(
                    "cannot tell how to create the schema of --vesalius-db-url from "
                    f"{shlex.join(self.command)!r}: pass --vesalius-migrate-cmd"
                )
            cmd = [*self.command[:-1], "db", "upgrade"]
        log = instance_dir / "migrate.log"
        with log.open("wb") as out:
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=instance_dir,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=self.startup_timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise BenchError(
                    f"{shlex.join(cmd)} did not finish within {self.startup_timeout:.0f} s"
                ) from None
        if proc.returncode != 0:
            raise BenchError(
                f"{shlex.join(cmd)} failed with exit code {proc.returncode}:\n{tail(log)}"
            )

    def api_token(self) -> str:
        """An API token of the ``admin`` account of the running server (HTTP needs one)."""
        if self._env is None:
            raise BenchError("the Vesalius server is not running")
        cmd = [*self.command[:-1], "user", "token", "admin", "--name", "benchmark"]
        proc = subprocess.run(
            cmd, env=dict(self._env), capture_output=True, text=True, timeout=120, check=False
        )
        token = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode != 0 or not token:
            raise BenchError(f"{shlex.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
        return token

    def version(self) -> str:
        try:
            from importlib.metadata import version

            return version("vesalius")
        except Exception:
            return ""

    @contextlib.contextmanager
    def run(self) -> Iterator[Endpoint]:
        instance_dir = server_folder(self.workdir, "vesalius-")
        proc: ManagedProcess | None = None
        try:
            data_dir = instance_dir / "data"
            data_dir.mkdir()
            dicom_port, http_port = free_ports(2)
            if self.database_url and self.reset_db:
                reset_database(self.database_url)
            # Inherited VESALIUS_* variables (or a config file) must not leak into the run.
            env = {k: v for k, v in os.environ.items() if not k.startswith("VESALIUS_")}
            env.update(
                VESALIUS_DATA_DIR=str(data_dir),
                VESALIUS_DICOM_PORT=str(dicom_port),
                VESALIUS_HTTP_PORT=str(http_port),
                VESALIUS_AE_TITLE=self.aet,
                VESALIUS_HTTP_HOST=LOOPBACK,
                VESALIUS_DICOM_HOST=LOOPBACK,
                VESALIUS_LOG_LEVEL=self.log_level,
                # The benchmark's calling AE queries and retrieves: list it with a role (an
                # unlisted AE may only echo and store).
                VESALIUS_REMOTE_AE=f'[{{name="benchmark", ae_title="{SCU_AET}", role="admin"}}]',
                PYTHONUNBUFFERED="1",
                # `make install-test` installs the test suite's example plugin in the same
                # environment; its instance filter is not part of the archive being measured.
                VESALIUS_DISABLED_PLUGINS='["example"]',
                VESALIUS_WORKERS=str(self.workers),
            )
            if self.database_url:
                env["VESALIUS_DATABASE_URL"] = self.database_url
            env.update(self.extra_env)
            self._env = env
            if self.database_url and not self.database_url.startswith("sqlite"):
                self._migrate(env, instance_dir)
            proc = ManagedProcess(
                "Vesalius", self.command, instance_dir / "vesalius.log", cwd=instance_dir, env=env
            )
            proc.start()
            self._proc = proc
            endpoint = Endpoint(self.aet, LOOPBACK, dicom_port, http_port)
            wait_until_echo(self.dcmtk, endpoint, proc, self.startup_timeout)
            yield endpoint
        finally:
            self._proc = None
            if proc is not None:
                proc.stop()
            shutil.rmtree(instance_dir, ignore_errors=True)


def add_vesalius_options(group: argparse._ActionsContainer) -> None:
    """``--vesalius-workers`` and ``--vesalius-env``, on an argparse parser or group."""
    group.add_argument(
        "--vesalius-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="VESALIUS_WORKERS (default: the CPU cores, as the README advises; Orthanc's "
        "threads use every core too)",
    )
    group.add_argument(
        "--vesalius-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment variable for Vesalius, e.g. VESALIUS_LOG_LEVEL=INFO (repeatable)",
    )


def key_values(items: Sequence[str], what: str) -> dict[str, str]:
    """``KEY=VALUE`` arguments (``--vesalius-env``) as a dict; *what* names the option."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"{what} expects KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


FIND_RESPONSE = re.compile(r"Find Response: \d+ \(Pending\)")


def count_find_responses(output: str) -> int:
    """Number of pending (= matching) responses in findscu's log output."""
    return len(FIND_RESPONSE.findall(output))


def fsync_limit(folder: Path, size: int, count: int = 200, threads: int = 1) -> float:
    """Files per second this disk makes durable as a store must: write a file of *size*
    bytes, fsync it, rename it into place and fsync the folder (the physical limit of an
    archive that acknowledges only durable instances)."""
    import concurrent.futures

    folder.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(size)

    def one(number: int) -> None:
        tmp = folder / f".{number}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, folder / f"{number}.dcm")
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - started
    for path in folder.iterdir():
        path.unlink()
    return count / elapsed
