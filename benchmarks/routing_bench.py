#!/usr/bin/env python3
"""Routing benchmark: what forwarding costs the ingest, and how fast a study is forwarded.

Two measurements, each repeated for ``--rounds`` rounds, with fresh servers every time:

* **ingest cost**: ``storescu`` sends the data set over one association to a Vesalius
  without a route, with one route that matches nothing (the event, change feed and catch-up
  machinery alone) and with one route that forwards every instance to a DCMTK ``storescp``
  (forwarding runs while the ingest does). The three alternate, their order rotating every
  round; the table gives each round's ratio to the run without a route, so that the machine's
  drift between rounds cancels out.
* **forwarding throughput** to a DCMTK ``storescp``: Vesalius with a route ``on = "stable"``
  (``stable_after_s = 1``) forwards the whole study once it is stable; Orthanc forwards the
  same study through ``POST /modalities/{id}/store`` (synchronous). Both are timed at the
  receiving end: from the first file ``storescp`` writes to the last one (its modification
  times), so neither the ingest nor the stability wait is counted; Orthanc's REST call time is
  shown too.

Usage: ``benchmarks/routing_bench.py [--instances 200] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import (
    _LIVE,
    LOOPBACK,
    SCU_AET,
    BenchError,
    Dcmtk,
    Endpoint,
    OrthancLauncher,
    VesaliusLauncher,
    cpu_times,
    default_vesalius_command,
    free_ports,
    generate_data,
    run_tool,
)

STORESCP_AET = "STORESCP"


@contextmanager
def storescp(dcmtk: Dcmtk, folder: Path) -> Iterator[int]:
    """A DCMTK storescp writing what it receives to *folder*; yields its port."""
    folder.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    proc = subprocess.Popen(
        [dcmtk.tool("storescp"), "-aet", STORESCP_AET, "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dcmtk.env,
    )
    try:
        endpoint = Endpoint(STORESCP_AET, LOOPBACK, port)
        deadline = time.monotonic() + 30
        while not dcmtk.echo(endpoint):
            if time.monotonic() > deadline:
                raise BenchError("storescp did not start")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def wait_files(folder: Path, count: int, timeout: float) -> list[float]:
    """Wait until *folder* holds *count* files; their modification times, sorted."""
    deadline = time.monotonic() + timeout
    while True:
        files = [p for p in folder.iterdir() if p.is_file()]
        if len(files) >= count:
            time.sleep(0.2)  # the last one finished writing
            return sorted(p.stat().st_mtime for p in files)
        if time.monotonic() > deadline:
            raise BenchError(f"{len(files)} of {count} instances forwarded after {timeout:.0f} s")
        time.sleep(0.05)


def server_cpu_s() -> float:
    """CPU seconds (user + system, all threads) of the running Vesalius server so far."""
    procs = [p for p in _LIVE if p.name == "Vesalius" and p.pid is not None]
    if not procs:
        return float("nan")
    return cpu_times(procs[0].pid).seconds


def ingest(dcmtk: Dcmtk, endpoint: Endpoint, folder: Path, timeout: float) -> float:
    cmd = [
        dcmtk.tool("storescu"), "-aet", SCU_AET, "-aec", endpoint.aet, "+sd", "+r",
        endpoint.host, str(endpoint.port), str(folder),
    ]  # fmt: skip
    start = time.perf_counter()
    run_tool(cmd, timeout, "storescu", dcmtk.env)
    return time.perf_counter() - start


def vesalius(
    args: argparse.Namespace, dcmtk: Dcmtk, work: Path, scp_port: int | None, route: str | None
) -> VesaliusLauncher:
    peers = f'{{name="benchmark", ae_title="{SCU_AET}", role="admin"}}'
    env = {}
    if scp_port is not None:
        peers += f', {{name="scp", ae_title="{STORESCP_AET}", host="{LOOPBACK}", port={scp_port}}}'
    env["VESALIUS_REMOTE_AE"] = f"[{peers}]"
    if route is not None:
        env["VESALIUS_ROUTE"] = route
        env["VESALIUS_STABLE_AFTER_S"] = "1"
    return VesaliusLauncher(
        args.vesalius_cmd, dcmtk, work, database_url=args.vesalius_db_url, extra_env=env
    )


ROUTES = {
    "none": None,
    "route, no match": '[{name="r", match={Modality="MR"}, to="scp"}]',
    "route, forwarding": '[{name="r", to="scp"}]',
}


def measure_ingest(
    args: argparse.Namespace, dcmtk: Dcmtk, work: Path, folder: Path, count: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    rates: dict[str, list[float]] = {name: [] for name in ROUTES}
    cpu_ms: dict[str, list[float]] = {name: [] for name in ROUTES}
    names = list(ROUTES)
    for round_no in range(args.rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in order:
            received = work / f"scp-{round_no}-{len(rates[name])}"
            with storescp(dcmtk, received) as port:
                launcher = vesalius(args, dcmtk, work, port, ROUTES[name])
                with launcher.run() as endpoint:
                    time.sleep(2)  # start-up work (first schedules) out of the way
                    cpu = server_cpu_s()
                    took = ingest(dcmtk, endpoint, folder, args.timeout)
                    if name == "route, forwarding":
                        wait_files(received, count, args.timeout)  # before the next run
                    time.sleep(1.5)  # the last catch-up passes
                    cpu = server_cpu_s() - cpu
            shutil.rmtree(received, ignore_errors=True)
            rates[name].append(count / took)
            cpu_ms[name].append(1000 * cpu / count)
            print(
                f"  round {round_no + 1} {name:>18}: {count / took:7.1f} inst/s, "
                f"{1000 * cpu / count:5.2f} ms CPU/inst",
                file=sys.stderr,
            )
    return rates, cpu_ms


def measure_forward(
    args: argparse.Namespace, dcmtk: Dcmtk, work: Path, folder: Path, count: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"vesalius": [], "orthanc": [], "orthanc_rest": []}
    for round_no in range(args.rounds):
        servers = ["vesalius", "orthanc"] if round_no % 2 == 0 else ["orthanc", "vesalius"]
        for server in servers:
            received = work / f"fwd-{server}-{round_no}"
            with storescp(dcmtk, received) as port:
                if server == "vesalius":
                    route = '[{name="study", to="scp", on="stable"}]'
                    with vesalius(args, dcmtk, work, port, route).run() as endpoint:
                        ingest(dcmtk, endpoint, folder, args.timeout)
                        times = wait_files(received, count, args.timeout)
                else:
                    modalities = {
                        "benchscu": {"AET": SCU_AET, "Host": LOOPBACK, "Port": 1},
                        "scp": {"AET": STORESCP_AET, "Host": LOOPBACK, "Port": port},
                    }
                    orthanc = OrthancLauncher(
                        args.orthanc,
                        dcmtk,
                        work,
                        http=True,
                        extra_config={"DicomModalities": modalities},
                    )
                    with orthanc.run() as endpoint:
                        ingest(dcmtk, endpoint, folder, args.timeout)
                        base = endpoint.http_url
                        with urllib.request.urlopen(f"{base}/studies", timeout=30) as rsp:
                            studies = json.load(rsp)
                        body = json.dumps({"Resources": studies, "Synchronous": True}).encode()
                        request = urllib.request.Request(
                            f"{base}/modalities/scp/store", data=body, method="POST"
                        )
                        start = time.perf_counter()
                        with urllib.request.urlopen(request, timeout=args.timeout) as rsp:
                            rsp.read()
                        out["orthanc_rest"].append(count / (time.perf_counter() - start))
                        times = wait_files(received, count, args.timeout)
            shutil.rmtree(received, ignore_errors=True)
            rate = (count - 1) / max(times[-1] - times[0], 1e-6)
            out[server].append(rate)
            print(f"  round {round_no + 1} {server:>8}: {rate:7.1f} inst/s", file=sys.stderr)
    return out


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=256, help="image rows and columns")
    parser.add_argument("--only", choices=["ingest", "forward"], help="one measurement only")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--vesalius-cmd",
        type=shlex.split,
        default=default_vesalius_command(),
        help="the serve command, one string (split like a shell)",
    )
    parser.add_argument("--vesalius-db-url", default=None)
    parser.add_argument("--orthanc", type=Path, default=Path("/usr/sbin/Orthanc"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dcmtk = Dcmtk.locate()
    work = Path(tempfile.mkdtemp(prefix="routing-bench-", dir=args.workdir))
    results: dict[str, Any] = {"instances": args.instances, "rounds": args.rounds}
    try:
        data = generate_data(
            work / "data",
            args.instances,
            rows=args.rows,
            columns=args.rows,
            instances_per_series=max(1, args.instances // 2),
            series_per_study=2,
            parts=1,
        )
        folder = data.parts[0]
        count = data.instances
        if args.only in (None, "ingest"):
            rates, cpu_ms = measure_ingest(args, dcmtk, work, folder, count)
            base = rates["none"]
            results["ingest"] = rates
            results["server_cpu_ms_per_instance"] = cpu_ms
            print(f"\nIngest, {count} instances, 1 association, {args.rounds} rounds")
            print(
                "| configuration | inst/s per round | ratio to no route, per round "
                "| server CPU ms/instance per round |"
            )
            print("| --- | --- | --- | --- |")
            for name, values in rates.items():
                ratios = [v / b for v, b in zip(values, base, strict=True)]
                per_round = ", ".join(f"{v:.1f}" for v in values)
                cpu = ", ".join(f"{c:.2f}" for c in cpu_ms[name])
                print(f"| {name} | {per_round} | {', '.join(f'{r:.3f}' for r in ratios)} | {cpu} |")
            print()
        if args.only in (None, "forward"):
            forward = measure_forward(args, dcmtk, work, folder, count)
            results["forward"] = forward
            print(f"\nForwarding one study of {count} instances to DCMTK storescp")
            print("| round | Vesalius (route on stable) | Orthanc REST store | ratio V/O |")
            print("| --- | --- | --- | --- |")
            for n, (v, o) in enumerate(zip(forward["vesalius"], forward["orthanc"], strict=True)):
                print(f"| {n + 1} | {v:.1f} inst/s | {o:.1f} inst/s | {v / o:.2f} |")
            rest = ", ".join(f"{r:.1f}" for r in forward["orthanc_rest"])
            print(f"\nOrthanc's REST call, whole: {rest} inst/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
