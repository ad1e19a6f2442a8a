#!/usr/bin/env python3
"""Where one process's CPU went in a machine-wide ``perf record``: libraries, leaf symbols,
system calls.

``ab_bench.py --perf DIR`` records the whole machine (``perf record -a -g``), servers and
clients together. ``perf report --sort comm`` lumps every Python process into one (client
and server workers are all ``python``), and its ``--pid`` filter gave inconsistent shares
here. This reads ``perf script`` output and counts the samples of the chosen processes
itself. It prints their shares by shared object and by leaf symbol, and the share of samples
under each of the system calls that a store makes (inclusive: a ``write`` counts its copy
into the page cache).

It is py-spy's complement: py-spy charges C and the kernel to the Python line that called
them. This is how a profile found uvicorn's copies of request bodies (``memmove``, 5-6% of
a STOW-RS server's CPU), then those of the body read ahead and joined (``memmove`` and
``realloc``, 13%), BLAKE3 (7.8% of a C-STORE server's) and the cost of folder fsyncs.

Example
-------
    .venv/bin/python benchmarks/ab_bench.py --variant main=. --load stow-series --rounds 1 \\
        --perf perf
    .venv/bin/python benchmarks/perf_top.py perf/main-1.data            # the server's processes
    .venv/bin/python benchmarks/perf_top.py perf/main-1.data --pid 5549 --pid 5550
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from profile_top import table
from rich.console import Console

# The head line of a sample in `perf script -F comm,pid,tid,ip,sym,dso`: "comm pid/tid".
_HEAD = re.compile(r"^(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s*$")
# A frame: "address symbol (object)".
_FRAME = re.compile(r"^\S+\s+(?P<sym>.*?)\s+\((?P<dso>.*)\)$")
# Kernel entry points of the system calls a store makes, and what to call them.
SYSCALLS = {
    "ksys_write": "write",
    "ksys_read": "read",
    "__x64_sys_pwrite64": "pwrite",
    "__x64_sys_pread64": "pread",
    "do_fsync": "fsync",
    "__x64_sys_openat": "openat",
    "__x64_sys_rename": "rename",
    "__x64_sys_futex": "futex",
    "__x64_sys_flock": "flock",
    "__x64_sys_epoll_wait": "epoll_wait",
    "__x64_sys_epoll_ctl": "epoll_ctl",
    "__x64_sys_sendto": "sendto",
    "__x64_sys_recvfrom": "recvfrom",
    "__x64_sys_mmap": "mmap",
    "__x64_sys_munmap": "munmap",
    "asm_exc_page_fault": "page faults",
    "do_syscall_64": "all system calls",
}


@dataclass
class Sample:
    comm: str
    pid: int
    frames: list[tuple[str, str]] = field(default_factory=list)  # (symbol, object), leaf first


def parse_script(lines: Iterable[str]) -> list[Sample]:
    """The samples of ``perf script -F comm,pid,tid,ip,sym,dso`` output."""
    samples: list[Sample] = []
    current: Sample | None = None
    for line in lines:
        if not line.strip():
            current = None
            continue
        if not line[0].isspace():
            head = _HEAD.match(line.rstrip())
            current = Sample(head["comm"], int(head["pid"])) if head else None
            if current is not None:
                samples.append(current)
        elif current is not None:
            frame = _FRAME.match(line.strip())
            if frame is not None:
                current.frames.append((frame["sym"], Path(frame["dso"]).name))
    return samples


def read_samples(path: Path) -> list[Sample]:
    """*path*: a ``perf.data`` file (``perf script`` is run on it) or its text output."""
    if path.suffix != ".data":
        return parse_script(path.read_text(errors="replace").splitlines())
    done = subprocess.run(
        ["perf", "script", "-i", str(path), "-F", "comm,pid,tid,ip,sym,dso"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return parse_script(done.stdout.splitlines())


def pids_file(recording: Path) -> Path:
    """Where ``ab_bench.py`` lists the server's processes of *recording*."""
    return recording.with_name(recording.name + ".pids")


def listed(recording: Path) -> list[int]:
    """The processes ``ab_bench.py`` wrote beside *recording* (:func:`pids_file`): a
    Vesalius server and its workers. The busiest processes of a STOW-RS recording include
    the Python client that sends the load."""
    pids = pids_file(recording)
    return [int(pid) for pid in pids.read_text().split()] if pids.exists() else []


def busiest(samples: Sequence[Sample], count: int) -> list[int]:
    """The *count* processes (not the idle task) with the most samples."""
    per_pid = Counter(s.pid for s in samples if s.pid != 0)
    return [pid for pid, _ in per_pid.most_common(count)]


def report(samples: Sequence[Sample], pids: Sequence[int], top: int, console: Console) -> None:
    chosen = [s for s in samples if s.pid in pids and s.frames]
    if not chosen:
        raise SystemExit("no samples of those processes")
    comms = Counter(f"{s.comm} {s.pid}" for s in chosen)
    console.print(
        f"{len(chosen)} samples of {', '.join(f'{c} ({n})' for c, n in comms.items())}; "
        f"{len(samples)} in the whole recording"
    )
    objects: Counter[str] = Counter(s.frames[0][1] for s in chosen)
    leaves: Counter[str] = Counter(f"{s.frames[0][0]} [{s.frames[0][1]}]" for s in chosen)
    calls: Counter[str] = Counter()
    for sample in chosen:
        symbols = {symbol for symbol, _ in sample.frames}
        calls.update(label for entry, label in SYSCALLS.items() if entry in symbols)
    total = len(chosen)
    console.print(table("by shared object (self)", objects, total, top, "where"))
    console.print(table("by leaf symbol (self)", leaves, total, top, "where"))
    console.print(table("under system calls (inclusive)", calls, total, len(SYSCALLS), "where"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recording", type=Path, help="perf.data, or `perf script` output")
    parser.add_argument(
        "--pid", type=int, action="append", help="a process to count (repeat; default: the "
        "server's processes that ab_bench.py listed in RECORDING.pids, else the --busiest)",
    )  # fmt: skip
    parser.add_argument(
        "--busiest", type=int, default=2, help="processes counted when no .pids file lists them"
    )
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    args = parser.parse_args(argv)
    samples = read_samples(args.recording)
    pids = args.pid or listed(args.recording) or busiest(samples, args.busiest)
    report(samples, pids, args.top, Console())
    return 0


if __name__ == "__main__":
    sys.exit(main())
