#!/usr/bin/env python3
"""Where the samples of py-spy collapsed stacks go: the functions with the most samples.

Reads the ``--format raw`` files that ``ab_bench.py --py-spy``, ``dimse_cpu.py --py-spy`` or
``py-spy record`` write (one line per distinct stack: ``frame;frame;... count``) and prints,
for all files given together, the functions with the most samples *in* them (self) and
*under* them (inclusive, each stack counted once per function), as shares of all samples.
Idle samples (a thread waiting in ``select``, ``epoll``, a lock or a queue) are left out
unless ``--idle`` is given, so the shares are of the CPU the process used.

Run ``benchmarks/profile_top.py --help`` for the options.

Example
-------
    .venv/bin/python benchmarks/profile_top.py prof/main-*.txt --top 30 --under store_steps
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# A frame as py-spy writes it: "function (path/to/module.py:line)"; the line is dropped so
# that the samples of one function add up.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Leaf functions (name, file) where a thread waits rather than computes.
IDLE = (
    ("select", "selectors.py"),
    ("wait", "threading.py"),
    ("_worker", "concurrent/futures/thread.py"),
    ("accept", "socket.py"),
)


def frame_name(frame: str) -> str:
    """``func (file.py:12)`` as ``func (package/file.py)``, trimmed to the last two folders."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    parts = Path(match["file"]).parts[-3:]
    return f"{match['func']} ({'/'.join(parts)})"


def read_stacks(paths: Iterable[Path]) -> Counter[tuple[str, ...]]:
    """Every stack of every file, with its sample count."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            stacks[tuple(frame_name(f) for f in stack.split(";"))] += int(count)
    return stacks


def is_idle(stack: Sequence[str]) -> bool:
    function, _, where = stack[-1].partition(" (")
    return any(function.endswith(name) and place in where for name, place in IDLE)


def summarise(
    stacks: Counter[tuple[str, ...]], under: str | None, idle: bool
) -> tuple[Counter[str], Counter[str], int]:
    """Self and inclusive samples per function, and the total, of the stacks kept."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for stack, count in stacks.items():
        if not idle and is_idle(stack):
            continue
        if under is not None:
            at = next((i for i, f in enumerate(stack) if under in f), None)
            if at is None:
                continue
            stack = stack[at:]
        total += count
        own[stack[-1]] += count
        for name in set(stack):
            inclusive[name] += count
    return own, inclusive, total


def table(title: str, counts: Counter[str], total: int, top: int, what: str = "function") -> Table:
    """The *top* of *counts*, each with its share of *total* (``perf_top.py`` uses it too)."""
    out = Table(title=title)
    out.add_column("share", justify="right")
    out.add_column("samples", justify="right")
    out.add_column(what)
    for name, count in counts.most_common(top):
        out.add_row(f"{count / total:.1%}", str(count), escape(name))  # "[kernel.kallsyms]"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="py-spy raw (collapsed) files")
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument(
        "--under", metavar="TEXT", help="only the stacks through a frame containing TEXT"
    )
    parser.add_argument("--idle", action="store_true", help="keep the samples of idle waits")
    args = parser.parse_args(argv)
    stacks = read_stacks(args.files)
    own, inclusive, total = summarise(stacks, args.under, args.idle)
    if total == 0:
        print("no samples (wrong files, or --under matched nothing)", file=sys.stderr)
        return 1
    console = Console()
    scope = f" under {args.under!r}" if args.under else ""
    console.print(f"{total} samples{scope} in {len(args.files)} file(s)")
    console.print(table("self", own, total, args.top))
    console.print(table("inclusive", inclusive, total, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
