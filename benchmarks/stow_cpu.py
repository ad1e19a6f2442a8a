#!/usr/bin/env python3
"""STOW-RS server CPU: Vesalius and Orthanc + its DICOMweb plugin side by side.

One client posts, one request at a time, so that the server's CPU time is the cost of the
requests alone. Three loads, each on a fresh server:

* ``one-image``: ``--studies`` one-instance studies (``--small-rows`` square images), one per
  request (every request creates a patient, a study and a series);
* ``batch-25`` and ``batch-100``: ``--instances`` 512x512 CT images of one series, posted in
  requests of 25 and 100 instances;
* ``studies-25`` (on request, with ``--loads``): the one-image studies posted 25 to a request,
  as ``dicomweb_bench`` posts them.

For each, the server's CPU time (user + system, all its threads and worker processes, from
``/proc``) is read before and after the posts and printed per request and per instance, with the
wall rate (instances/s). A few warm-up requests (other studies) go first, so imports and caches
are not counted. With ``--py-spy DIR`` each Vesalius load is also profiled (``py-spy record
--nonblocking``, speedscope files in DIR), which costs the server some CPU of its own.

Examples
--------
    .venv/bin/python benchmarks/stow_cpu.py
    .venv/bin/python benchmarks/stow_cpu.py --studies 100 --instances 100 --servers vesalius
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import (
    STOW_TYPE,
    BenchError,
    Dcmtk,
    OrthancLauncher,
    VesaliusLauncher,
    cpu_times,
    default_vesalius_command,
    find_orthanc_plugin,
    generate_data,
    in_requests,
    py_spy,
    stow_body,
    wait_http,
)

WARMUP_REQUESTS = 5


@dataclass(frozen=True)
class Load:
    """One measured load: the requests' bodies, and how many instances they carry."""

    name: str
    bodies: list[bytes]
    instances: int
    warmup: list[bytes]


@dataclass(frozen=True)
class Figures:
    cpu_ms_per_request: float
    cpu_ms_per_instance: float
    instances_per_s: float
    user_ms_per_request: float  # the two parts of cpu_ms_per_request
    system_ms_per_request: float
    machine_busy: float  # the share of the whole machine's CPU that was not idle


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


def make_loads(root: Path, args: argparse.Namespace) -> list[Load]:
    """The data of every load, generated once, as request bodies."""
    small = _files(
        generate_data(
            root / "small",
            args.studies + WARMUP_REQUESTS,
            prefix="STOWCPU",
            rows=args.small_rows,
            columns=args.small_rows,
            instances_per_series=1,
            series_per_study=1,
            parts=1,
        ).root
    )
    warm_small, measured = small[:WARMUP_REQUESTS], small[WARMUP_REQUESTS:]
    loads = [Load("one-image", in_requests(measured, 1), len(measured), in_requests(warm_small, 1))]
    warm = _files(
        generate_data(
            root / "warm", WARMUP_REQUESTS, prefix="WARM", rows=args.rows, columns=args.rows,
            instances_per_series=WARMUP_REQUESTS, series_per_study=1, parts=1,
        ).root
    )  # fmt: skip
    for batch in args.batches:
        if f"studies-{batch}" in args.loads:
            bodies = in_requests(measured, batch)
            loads.append(Load(f"studies-{batch}", bodies, len(measured), [stow_body(warm_small)]))
        if f"batch-{batch}" not in args.loads:
            continue
        big = _files(
            generate_data(
                root / f"big{batch}", args.instances, prefix=f"BIG{batch}", rows=args.rows,
                columns=args.rows, instances_per_series=args.instances, series_per_study=1,
                parts=1,
            ).root
        )  # fmt: skip
        loads.append(Load(f"batch-{batch}", in_requests(big, batch), len(big), [stow_body(warm)]))
    return loads


def run_load(
    base: str, pid: int, load: Load, auth: dict[str, str], profile: Path | None, gil: bool
) -> Figures:
    with httpx.Client(timeout=600, headers=auth) as client:

        def post(body: bytes) -> None:
            response = client.post(
                f"{base}/studies", content=body, headers={"Content-Type": STOW_TYPE}
            )
            if response.status_code != 200:
                raise BenchError(f"STOW-RS answered {response.status_code}: {response.text[:300]}")

        for body in load.warmup:
            post(body)
        with py_spy(pid, profile, fmt="speedscope", rate=200, gil=gil):
            before = cpu_times(pid)
            start = time.perf_counter()
            for body in load.bodies:
                post(body)
            wall = time.perf_counter() - start
            cpu = cpu_times(pid) - before
    requests = len(load.bodies)
    return Figures(
        cpu.seconds * 1000 / requests,
        cpu.seconds * 1000 / load.instances,
        load.instances / wall,
        cpu.user * 1000 / requests,
        cpu.system * 1000 / requests,
        cpu.busy_share,
    )


@contextlib.contextmanager
def server(
    name: str, args: argparse.Namespace, dcmtk: Dcmtk, workdir: Path
) -> Iterator[tuple[str, int, dict[str, str]]]:
    """(DICOMweb root, server PID, authentication headers) of a fresh, empty server."""
    launcher: OrthancLauncher | VesaliusLauncher
    if name == "orthanc":
        launcher = OrthancLauncher(
            OrthancLauncher.locate(args.orthanc), dcmtk, workdir,
            plugins=[find_orthanc_plugin()], http=True,
            extra_config={"DicomWeb": {"Enable": True, "Root": "/dicom-web/"}},
        )  # fmt: skip
    else:
        launcher = VesaliusLauncher(
            args.vesalius_cmd or default_vesalius_command(),
            dcmtk,
            workdir,
            database_url=args.database_url,
        )
        launcher.check()
    with launcher.run() as endpoint:
        assert endpoint.http_url and launcher.pid is not None
        auth: dict[str, str] = {}
        if isinstance(launcher, VesaliusLauncher):
            auth = {"Authorization": f"Bearer {launcher.api_token()}"}
        wait_http(endpoint.http_url + "/dicom-web/studies?limit=1", auth)
        yield f"{endpoint.http_url}/dicom-web", launcher.pid, auth


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=200, help="one-image studies posted")
    parser.add_argument("--small-rows", type=int, default=64, help="size of those images")
    parser.add_argument("--instances", type=int, default=200, help="CT images per batch load")
    parser.add_argument("--rows", type=int, default=512, help="size of the CT images")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[25, 100], help="instances per request"
    )
    parser.add_argument(
        "--loads",
        nargs="+",
        default=["one-image", "batch-25", "batch-100"],
        help="which loads (one-image; batch-N and studies-N for each N of --batches)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians; fresh servers)")
    parser.add_argument("--servers", default="vesalius,orthanc", help="which servers, in order")
    parser.add_argument("--database-url", help="Vesalius index (default: SQLite in a temp folder)")
    parser.add_argument("--vesalius-cmd", nargs="+", help="command that runs `vesalius serve`")
    parser.add_argument("--orthanc", type=Path, default=Path("/usr/sbin/Orthanc"))
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="profile Vesalius' loads")
    parser.add_argument("--gil", action="store_true", help="profile only GIL-holding samples")
    parser.add_argument("--workdir", type=Path, help="parent of the temp folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if "orthanc" in names:
        try:
            OrthancLauncher.locate(args.orthanc)
            find_orthanc_plugin()
        except BenchError as exc:
            print(f"skipping Orthanc: {exc}", file=sys.stderr)
            names.remove("orthanc")
    if args.py_spy and not shutil.which("py-spy"):
        print("py-spy not found: --py-spy ignored", file=sys.stderr)
        args.py_spy = None
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str], list[Figures]] = {}
    try:
        dcmtk = Dcmtk.locate()
        with tempfile.TemporaryDirectory(prefix="stow-cpu-", dir=args.workdir) as tmp:
            root = Path(tmp)
            print("generating data ...", flush=True)
            loads = [load for load in make_loads(root, args) if load.name in args.loads]
            for number, load, name in (
                (n, load, name)
                for n in range(args.rounds)
                for load in loads
                for name in (names if n % 2 == 0 else names[::-1])
            ):
                with server(name, args, dcmtk, root) as (base, pid, auth):
                    profile = None
                    if args.py_spy and name == "vesalius":
                        profile = args.py_spy / f"vesalius-{load.name}-{number + 1}.speedscope.json"
                    figures = run_load(base, pid, load, auth, profile, args.gil)
                results.setdefault((load.name, name), []).append(figures)
                print(
                    f"  round {number + 1} {load.name:10} {name:9}"
                    f" {figures.cpu_ms_per_request:8.2f} ms/request"
                    f" {figures.cpu_ms_per_instance:7.2f} ms/instance"
                    f" {figures.instances_per_s:8.1f} instances/s"
                    f" (user {figures.user_ms_per_request:.2f}, system"
                    f" {figures.system_ms_per_request:.2f} ms/request; machine"
                    f" {figures.machine_busy:.0%} busy)",
                    flush=True,
                )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    header = f"{'CPU ms/request':>15} {'CPU ms/instance':>16} {'inst/s':>8}"
    print(f"\n{'load':10} {'server':9} {header}   (median of {args.rounds} rounds)")
    for (load_name, name), rounds in sorted(results.items()):
        f = Figures(
            *(statistics.median(getattr(r, k) for r in rounds) for k in Figures.__annotations__)
        )
        print(
            f"{load_name:10} {name:9} {f.cpu_ms_per_request:15.2f} "
            f"{f.cpu_ms_per_instance:16.2f} {f.instances_per_s:8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
