#!/usr/bin/env python3
"""A/B of Vesalius code changes: source trees measured in interleaved rounds, paired ratios.

The development machine's speed varies from one server run to the next by more than most
changes are worth, so two benchmark runs one after the other cannot tell a 10% gain from the
noise. Here every round runs each variant once, one after the other (every other round in
reverse), on fresh servers with the same data; the result is each variant's ratio to the first
variant *in the same round* (what drifts over minutes cancels out) and how many rounds it won.

Run an A/A test first (``--variant a=. --variant b=.``): it shows the spread of this machine
that day. Measured on 2026-12-04, 4 associations, 6 rounds: per-round ratios of the same code
0.85-1.22 with 2 workers and 0.88-1.39 with 1, the CPU per instance moving with them (3.2 to
4.0 ms), medians within 5%. A likely cause, not proven: the guest runs DAMON reclaim
(``pageout`` of cold memory), so a server's new page cache may land in memory that the host
must fault in again. A change is shown by the median ratio *and* the rounds won over enough
rounds, not by one round.

A variant is a git revision (checked out into a temporary worktree, removed at the end) or a
folder holding ``src/vesalius``; all run with this checkout's venv (``PYTHONPATH=<tree>/src``),
so only the code differs, except a folder with a venv of its own (``<folder>/.venv``), which
runs with that one: so two interpreters, or two sets of dependencies, can be compared. Each
tree is checked to be the one Python imports: a ``PYTHONPATH`` that does not exist would
silently fall back to this checkout.

Loads (``--load``):

* ``dimse``: ``storescu`` ingest of ``--instances`` 512x512 CT images over ``--parallel``
  associations (as ``dimse_bench``; ``--parallel 1`` for the single-association row);
* ``stow-studies``: STOW-RS of ``--instances`` one-image 64x64 studies, 25 to a request, from
  ``--parallel`` clients (as ``dicomweb_bench``);
* ``stow-series``: STOW-RS of a ``--instances``-image 512x512 series, 25 to a request.

Printed per round and variant: instances/s and the server's CPU ms per instance (all its
processes, from ``/proc``); at the end the medians, the per-round ratios to the first variant
(median, min-max) and the rounds each variant won. With ``--py-spy DIR`` every Vesalius send is
also sampled (which costs the server some CPU: compare profiles, not rates, of such a run);
with ``--perf DIR`` the whole machine is, by ``perf``, during every send (Orthanc's too).

Examples
--------
    .venv/bin/python benchmarks/ab_bench.py --variant before=HEAD~1 --variant after=HEAD
    .venv/bin/python benchmarks/ab_bench.py --variant main=. --variant exp=../exp \\
        --load stow-studies --rounds 5 --orthanc
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    REPO_ROOT,
    BenchError,
    Dcmtk,
    Endpoint,
    OrthancLauncher,
    VesaliusLauncher,
    add_vesalius_options,
    cpu_times,
    default_vesalius_command,
    family,
    find_orthanc_plugin,
    generate_data,
    key_values,
    perf_record,
    py_spy,
    run_parallel,
    wait_http,
)
from dicomweb_bench import stow
from perf_top import pids_file
from rich.console import Console
from rich.table import Table

LOADS = ("dimse", "stow-studies", "stow-series")
ORTHANC = "orthanc"
REQUEST_SIZE = 25  # instances per STOW-RS request, as dicomweb_bench posts them


@dataclass
class Variant:
    """One tree of Vesalius source to measure (``tree`` None: Orthanc)."""

    name: str
    tree: Path | None
    worktree: bool = False  # made here; removed at the end
    venv: Path | None = None  # a venv of the variant's own, else this checkout's
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
    )


def make_variant(spec: str, scratch: Path) -> Variant:
    """``NAME=REV_OR_FOLDER`` (or ``REV_OR_FOLDER``, named after itself) as a :class:`Variant`."""
    name, sep, target = spec.partition("=")
    if not sep:
        name, target = spec, spec
    folder = Path(target).expanduser()
    if (folder / "src" / "vesalius").is_dir():
        venv = folder / ".venv"
        return Variant(
            name, folder.resolve(), venv=venv if (venv / "bin" / "vesalius").exists() else None
        )
    commit = _git("rev-parse", "--verify", "--quiet", f"{target}^{{commit}}").stdout.strip()
    if not commit:
        raise BenchError(
            f"variant {spec!r}: {target!r} is neither a folder with src/vesalius nor a git "
            "revision of this checkout"
        )
    tree = scratch / f"tree-{name}"
    added = _git("worktree", "add", "--detach", str(tree), commit)
    if added.returncode != 0:
        raise BenchError(f"git worktree add for {spec!r} failed: {added.stderr.strip()}")
    return Variant(name, tree, worktree=True)


def python_of(variant: Variant) -> str:
    """The interpreter that runs *variant*."""
    return str(variant.venv / "bin" / "python") if variant.venv is not None else sys.executable


def check_imports(variant: Variant, python: str) -> None:
    """Fail unless ``PYTHONPATH=<tree>/src`` makes Python import *variant*'s own code; compile
    the tree, so that its first round does not pay for the modules it imports late."""
    assert variant.tree is not None
    src = variant.tree / "src"
    subprocess.run([python, "-m", "compileall", "-q", str(src)], capture_output=True, check=False)
    proc = subprocess.run(
        [python, "-c", "import vesalius; print(vesalius.__file__)"],
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    imported = Path(proc.stdout.strip() or "?").resolve()
    if proc.returncode != 0 or not imported.is_relative_to(src.resolve()):
        raise BenchError(
            f"variant {variant.name!r}: Python imports vesalius from {imported}, not from {src} "
            f"({proc.stderr.strip()[-300:]})"
        )


def remove_worktrees(variants: Sequence[Variant]) -> None:
    for variant in variants:
        if variant.worktree and variant.tree is not None:
            _git("worktree", "remove", "--force", str(variant.tree))
    _git("worktree", "prune")


# --------------------------------------------------------------------------------------------
# Servers and loads


@contextlib.contextmanager
def serving(
    variant: Variant, args: argparse.Namespace, dcmtk: Dcmtk, workdir: Path
) -> Iterator[tuple[Endpoint, int, dict[str, str]]]:
    """A fresh server of *variant*: its endpoint, its PID and the HTTP headers it wants."""
    http = args.load != "dimse"
    launcher: OrthancLauncher | VesaliusLauncher
    if variant.tree is None:
        launcher = OrthancLauncher(
            OrthancLauncher.locate(args.orthanc_bin), dcmtk, workdir,
            plugins=[find_orthanc_plugin()] if http else [], http=http,
            extra_config={"DicomWeb": {"Enable": True, "Root": "/dicom-web/"}} if http else {},
        )  # fmt: skip
    else:
        launcher = VesaliusLauncher(
            [str(variant.venv / "bin" / "vesalius"), "serve"]
            if variant.venv is not None
            else default_vesalius_command(),
            dcmtk,
            workdir,
            workers=args.vesalius_workers,
            extra_env={
                **key_values(args.vesalius_env, "--vesalius-env"),
                "PYTHONPATH": str(variant.tree / "src"),
            },
        )
        launcher.check()
    with launcher.run() as endpoint:
        assert launcher.pid is not None
        auth: dict[str, str] = {}
        if isinstance(launcher, VesaliusLauncher) and http:
            auth = {"Authorization": f"Bearer {launcher.api_token()}"}
        if http:
            wait_http(f"{endpoint.http_url}/dicom-web/studies?limit=1", auth)
        yield endpoint, launcher.pid, auth


def make_load(
    args: argparse.Namespace, dcmtk: Dcmtk, root: Path
) -> Callable[[Endpoint, dict[str, str]], None]:
    """Generate the data of ``--load`` under *root*; returns what sends it to a server."""
    if args.load == "dimse":
        data = generate_data(root, args.instances, parts=args.parallel)

        def send_dimse(endpoint: Endpoint, _auth: dict[str, str]) -> None:
            cmds = [dcmtk.store_cmd(endpoint, part) for part in data.parts]
            run_parallel(cmds, args.timeout, root / "logs", "storescu", dcmtk.env)

        return send_dimse
    if args.load == "stow-studies":
        data = generate_data(
            root, args.instances, prefix="AB", rows=64, columns=64, instances_per_series=1,
            series_per_study=1, studies_per_patient=2, parts=1,
        )  # fmt: skip
    else:
        data = generate_data(
            root, args.instances, prefix="AB", instances_per_series=args.instances,
            series_per_study=1, parts=1,
        )  # fmt: skip
    files = sorted(p for part in data.parts for p in part.glob("*.dcm"))

    def send_stow(endpoint: Endpoint, auth: dict[str, str]) -> None:
        stow(f"{endpoint.http_url}/dicom-web", files, REQUEST_SIZE, args.parallel, auth)

    return send_stow


# --------------------------------------------------------------------------------------------
# Report


def _ratios(variant: Variant, first: Variant) -> list[float]:
    return [mine / theirs for mine, theirs in zip(variant.rates, first.rates, strict=False)]


def report(variants: Sequence[Variant], console: Console) -> None:
    first = variants[0]
    table = Table(title=f"Interleaved A/B, ratios to {first.name!r} in the same round")
    table.add_column("variant")
    table.add_column("inst/s, median", justify="right")
    table.add_column("CPU ms/inst, median", justify="right")
    table.add_column(f"x {first.name}, median [min-max]", justify="right")
    table.add_column("rounds won", justify="right")
    for variant in variants:
        ratios = _ratios(variant, first)
        won = sum(r > 1 for r in ratios)
        table.add_row(
            variant.name,
            f"{statistics.median(variant.rates):.1f}",
            f"{statistics.median(variant.cpu_ms):.2f}",
            "" if variant is first
            else f"{statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]",
            "" if variant is first else f"{won}/{len(ratios)}",
        )  # fmt: skip
    console.print(table)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant",
        action="append",
        required=True,
        metavar="NAME=REV_OR_FOLDER",
        help="a git revision or a folder with src/vesalius (repeat; the first is the baseline)",
    )
    parser.add_argument("--load", choices=LOADS, default="dimse", help="what is sent")
    parser.add_argument(
        "--instances",
        type=int,
        help="instances per round (default: 4000 for stow-studies, 800 otherwise: rounds of "
        "1,000 one-image studies last about a second and swung by 20%%, so that two "
        "apparent gains vanished at 4,000)",
    )
    parser.add_argument("--parallel", type=int, default=4, help="associations or HTTP clients")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each runs every variant)")
    parser.add_argument("--orthanc", action="store_true", help="run Orthanc in each round too")
    parser.add_argument("--orthanc-bin", type=Path, default=Path("/usr/sbin/Orthanc"))
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per send")
    parser.add_argument("--workdir", type=Path, help="parent of the temp folder")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record each Vesalius send with py-spy into DIR/<variant>-<round>.txt "
        "(collapsed stacks; summarise them with profile_top.py)",
    )
    parser.add_argument(
        "--gil", action="store_true", help="with --py-spy: only the thread holding the GIL"
    )
    parser.add_argument(
        "--perf",
        type=Path,
        metavar="DIR",
        help="record each send, of every variant and Orthanc, with perf (the whole machine: "
        "C libraries and the kernel too) into DIR/<variant>-<round>.data",
    )
    add_vesalius_options(parser)
    args = parser.parse_args(argv)
    if args.instances is None:
        args.instances = 4000 if args.load == "stow-studies" else 800
    if args.rounds < 1 or args.instances < 1 or args.parallel < 1:
        parser.error("--rounds, --instances and --parallel must be at least 1")
    for folder in (args.py_spy, args.perf):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    return args


def measure(
    args: argparse.Namespace, variants: Sequence[Variant], root: Path, console: Console
) -> None:
    """Generate the load under *root* and run every round."""
    dcmtk = Dcmtk.locate()
    console.print(f"generating {args.instances} instances for {args.load} ...")
    send = make_load(args, dcmtk, root / "data")
    for number in range(1, args.rounds + 1):
        # Every other round in reverse, so that no variant always runs right after another.
        for variant in variants if number % 2 else list(reversed(variants)):
            with serving(variant, args, dcmtk, root) as (endpoint, pid, auth):
                time.sleep(0.5)  # let the workers settle
                profile = None
                if args.py_spy is not None and variant.tree is not None:
                    profile = args.py_spy / f"{variant.name}-{number}.txt"
                recording = args.perf / f"{variant.name}-{number}.data" if args.perf else None
                with perf_record(recording), py_spy(pid, profile, gil=args.gil):
                    before = cpu_times(pid)
                    started = time.perf_counter()
                    send(endpoint, auth)
                    elapsed = time.perf_counter() - started
                    used = cpu_times(pid) - before
                if recording is not None:  # perf_top.py counts these processes
                    pids_file(recording).write_text(" ".join(map(str, family(pid))))
            variant.rates.append(args.instances / elapsed)
            variant.cpu_ms.append(used.seconds / args.instances * 1000)
            console.print(
                f"round {number} {variant.name:>12}: {variant.rates[-1]:7.1f} inst/s, "
                f"{variant.cpu_ms[-1]:.2f} ms CPU/inst (system "
                f"{used.system / args.instances * 1000:.2f}), machine {used.busy_share:.0%} busy"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM ends the run through the finally blocks: the servers are stopped, the
    # worktrees and the temp folder removed (by default it would kill this process alone).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console()
    variants: list[Variant] = []
    try:
        with tempfile.TemporaryDirectory(prefix="ab-bench-", dir=args.workdir) as tmp:
            try:
                for spec in args.variant:
                    variants.append(make_variant(spec, Path(tmp)))
                    check_imports(variants[-1], python_of(variants[-1]))
                if args.orthanc:
                    variants.append(Variant(ORTHANC, None))
                measure(args, variants, Path(tmp), console)
            finally:
                remove_worktrees(variants)  # before the folder that holds them goes
        report(variants, console)
    except BenchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
