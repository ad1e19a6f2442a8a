#!/usr/bin/env python3
"""Server CPU per DIMSE request: Vesalius and (when installed) Orthanc side by side.

Wall time on a shared machine says little about what a request costs the server; the CPU time
the server process spends does. For each server a fresh instance is started, *N* generated
instances are stored with ``storescu`` over one association (CPU ms per instance stored), and
then:

* ``findscu -S`` (study level, the usual study-list keys) is called *R* times; the server's
  CPU time (utime + stime from /proc, its worker processes included) before and after gives the CPU
  ms per C-FIND call, and the median wall time of a call is printed alongside;
* ``getscu -S`` fetches every study once; CPU ms per instance sent and MB/s.

With ``--py-spy DIR``, ``py-spy record --nonblocking`` samples the Vesalius server while the
calls run and writes collapsed stacks (``store.txt``, ``find.txt``, ``get.txt``) to DIR.

Run ``benchmarks/dimse_cpu.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import _common
from _common import (
    BenchError,
    Dcmtk,
    GeneratedData,
    OrthancLauncher,
    VesaliusLauncher,
    count_find_responses,
    default_vesalius_command,
    generate_data,
    py_spy,
    run_tool,
    tree_size,
)

STUDY_KEYS: dict[str, str] = {
    "QueryRetrieveLevel": "STUDY",
    "PatientName": "",
    "PatientID": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "StudyDate": "",
    "StudyTime": "",
    "AccessionNumber": "",
    "StudyDescription": "",
    "ModalitiesInStudy": "",
    "StudyInstanceUID": "",
    "NumberOfStudyRelatedSeries": "",
    "NumberOfStudyRelatedInstances": "",
}
TIMEOUT = 300.0


@dataclass
class Figures:
    """What one server measured."""

    store_cpu_ms_per_instance: float
    store_rate: float
    find_cpu_ms: float
    find_wall_ms: float
    matches: int
    get_cpu_ms_per_instance: float
    get_mb_s: float
    instances: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the server *pid* (its workers included) so far."""
    return _common.cpu_times(pid).seconds


def server_pid(launcher: object) -> int:
    """The PID of the server *launcher* just started.

    The launchers yield only the endpoint; the process they started is the one live
    :class:`_common.ManagedProcess` of that name.
    """
    name = "Orthanc" if isinstance(launcher, OrthancLauncher) else "Vesalius"
    pids = [p.pid for p in _common._LIVE if p.name == name and p.pid is not None]
    if len(pids) != 1:
        raise BenchError(f"cannot tell the {name} server's PID ({pids})")
    return pids[0]


def measure(
    launcher: VesaliusLauncher | OrthancLauncher,
    dcmtk: Dcmtk,
    data: GeneratedData,
    repeats: int,
    tmp: Path,
    profile: Path | None,
) -> Figures:
    env = dcmtk.env
    with launcher.run() as endpoint:
        pid = server_pid(launcher)
        with py_spy(pid, profile / "store.txt" if profile else None, rate=997):
            before = cpu_seconds(pid)
            start = time.perf_counter()
            run_tool(dcmtk.store_cmd(endpoint, data.root), TIMEOUT, "storescu", env)
            store_wall = time.perf_counter() - start
            store_cpu = cpu_seconds(pid) - before
        time.sleep(1.0)  # let background work after the store settle
        find = dcmtk.find_cmd(endpoint, STUDY_KEYS)
        run_tool(find, TIMEOUT, "findscu", env)  # warm up
        walls: list[float] = []
        matches: set[int] = set()
        with py_spy(pid, profile / "find.txt" if profile else None, rate=997):
            before = cpu_seconds(pid)
            for _ in range(repeats):
                start = time.perf_counter()
                proc = run_tool(find, TIMEOUT, "findscu", env)
                walls.append((time.perf_counter() - start) * 1000)
                matches.add(count_find_responses(proc.stdout + proc.stderr))
            find_cpu = cpu_seconds(pid) - before
        if matches != {len(data.studies)}:
            raise BenchError(f"C-FIND returned {sorted(matches)}, not {len(data.studies)} studies")
        seconds = 0.0
        received = files = 0
        with py_spy(pid, profile / "get.txt" if profile else None, rate=997):
            before = cpu_seconds(pid)
            for index, study in enumerate(data.studies):
                target = tmp / f"get-{index}"
                target.mkdir(parents=True)
                start = time.perf_counter()
                run_tool(dcmtk.get_cmd(endpoint, study.study_uid, target), TIMEOUT, "getscu", env)
                seconds += time.perf_counter() - start
                count, nbytes = tree_size(target)
                files += count
                received += nbytes
                shutil.rmtree(target, ignore_errors=True)
            get_cpu = cpu_seconds(pid) - before
        if files != data.instances:
            raise BenchError(f"C-GET returned {files} of {data.instances} instances")
    return Figures(
        store_cpu_ms_per_instance=store_cpu * 1000 / data.instances,
        store_rate=data.instances / store_wall,
        find_cpu_ms=find_cpu * 1000 / repeats,
        find_wall_ms=statistics.median(walls),
        matches=len(data.studies),
        get_cpu_ms_per_instance=get_cpu * 1000 / files,
        get_mb_s=received / seconds / 1e6,
        instances=files,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--instances", type=int, default=200, help="instances to store")
    parser.add_argument("--per-series", type=int, default=10, help="instances per series")
    parser.add_argument("--size", type=int, default=256, help="rows and columns of each image")
    parser.add_argument("--repeats", type=int, default=30, help="C-FIND calls measured")
    parser.add_argument(
        "--servers", nargs="+", choices=("vesalius", "orthanc"), default=["vesalius", "orthanc"]
    )
    parser.add_argument("--vesalius-cmd", default=shlex.join(default_vesalius_command()))
    parser.add_argument("--dcmtk-dir", type=Path, default=_common.DEFAULT_DCMTK_DIR)
    parser.add_argument("--orthanc-bin", type=Path, default=_common.DEFAULT_ORTHANC)
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="write py-spy collapsed stacks of Vesalius here")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="vesalius-dimse-cpu-"))
    try:
        dcmtk = Dcmtk.locate(args.dcmtk_dir)
        data = generate_data(
            tmp / "data",
            args.instances,
            rows=args.size,
            columns=args.size,
            instances_per_series=args.per_series,
            parts=1,
        )
        rows: list[tuple[str, Figures]] = []
        for name in args.servers:
            launcher: VesaliusLauncher | OrthancLauncher
            if name == "orthanc":
                try:
                    binary = OrthancLauncher.locate(args.orthanc_bin)
                except BenchError as exc:
                    print(f"skipping Orthanc: {exc}", file=sys.stderr)
                    continue
                launcher = OrthancLauncher(binary=binary, dcmtk=dcmtk, workdir=tmp)
            else:
                launcher = VesaliusLauncher(
                    command=shlex.split(args.vesalius_cmd), dcmtk=dcmtk, workdir=tmp
                )
                launcher.check()
            profile = None
            if args.py_spy is not None and name == "vesalius":
                args.py_spy.mkdir(parents=True, exist_ok=True)
                profile = args.py_spy
            figures = measure(launcher, dcmtk, data, args.repeats, tmp, profile)
            rows.append((launcher.label, figures))
        print(
            f"{data.instances} instances ({data.nbytes / 1e6:.1f} MB) in {len(data.studies)} "
            f"studies; {args.repeats} C-FIND calls, each study fetched once with C-GET"
        )
        print(
            f"{'server':<10} {'store CPU ms/inst':>18} {'store inst/s':>13} "
            f"{'find CPU ms/call':>17} {'find wall ms':>13} "
            f"{'get CPU ms/inst':>16} {'get MB/s':>9}"
        )
        for label, f in rows:
            print(
                f"{label:<10} {f.store_cpu_ms_per_instance:>18.2f} {f.store_rate:>13.1f} "
                f"{f.find_cpu_ms:>17.2f} {f.find_wall_ms:>13.1f} "
                f"{f.get_cpu_ms_per_instance:>16.2f} {f.get_mb_s:>9.1f}"
            )
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
