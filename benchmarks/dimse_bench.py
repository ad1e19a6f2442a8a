#!/usr/bin/env python3
"""DIMSE benchmark: Vesalius and Orthanc side by side, driven by the DCMTK command line tools.

For every round and every server a fresh, empty server is started (new temp folder; for
Vesalius on PostgreSQL the database is dropped and re-created), optionally preloaded, measured
and stopped again. Servers alternate, and their order flips every round. Measured:

* ingest rate (instances/s) with ``storescu`` over 1 association, and over N parallel
  associations (N ``storescu`` processes, each sending its share of the studies); beside it
  two limits measured in the same round: the disk's rate of fsync'd writes of files of the
  instance size, and the rate storescu itself reaches into ``storescp --ignore`` (an SCP that
  stores nothing), the most any archive can take from this client here; and the server's CPU
  per instance stored (user + system, workers included; the log and the JSON record also give
  the two apart and how busy the whole machine was: a row that is slower at less CPU waited);
* C-ECHO, C-FIND study-level latency (``findscu -S``, median of repeated calls; each call is a
  whole process: start, associate, query, release), for a PatientName wildcard and for a
  StudyDate range;
* the same C-FINDs repeated on one open association (``_scu.py``, a blocking client on
  pynetdicom's codecs): the server's own latency, without a process start;
* C-GET throughput (MB/s, 1 MB = 10^6 bytes) with ``getscu -S``, one association per study.

Run ``benchmarks/dimse_bench.py --help`` for the options and benchmarks/README.md for details.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from _common import (
    LOOPBACK,
    REPO_ROOT,
    SCU_AET,
    BenchError,
    Dcmtk,
    Endpoint,
    GeneratedData,
    ManagedProcess,
    OrthancLauncher,
    VesaliusLauncher,
    add_vesalius_options,
    count_find_responses,
    cpu_times,
    default_vesalius_command,
    free_ports,
    fsync_limit,
    generate_data,
    key_values,
    mask_url,
    run_parallel,
    run_tool,
    tree_size,
    wait_until_echo,
)
from _scu import FindAssociation
from pydicom import dcmread
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

# Wide enough for the table when the output goes to a file or a pipe.
console = Console(stderr=True, log_path=False, width=None if sys.stderr.isatty() else 120)
out = Console(width=None if sys.stdout.isatty() else 140)

STUDY_KEYS: dict[str, str] = {
    "QueryRetrieveLevel": "STUDY",
    "PatientName": "",
    "PatientID": "",
    "PatientBirthDate": "",
    "StudyDate": "",
    "StudyTime": "",
    "AccessionNumber": "",
    "StudyDescription": "",
    "ModalitiesInStudy": "",
    "StudyInstanceUID": "",
    "NumberOfStudyRelatedSeries": "",
    "NumberOfStudyRelatedInstances": "",
}
FIND_TIMEOUT = 120.0
ASSOC_REPEATS = 5  # C-FINDs on one association per findscu call (they are quicker)
LIMIT = "limit"  # the disk's rate of durable file writes, measured in the same run
SENDER = "sender"  # storescu's own rate into an SCP that stores nothing, in the same run


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool


class Launcher(Protocol):
    key: str
    label: str

    @property
    def pid(self) -> int | None: ...

    def run(self) -> AbstractContextManager[Endpoint]: ...

    def version(self) -> str: ...


@dataclass
class Options:
    instances: int
    instances_per_series: int
    series_per_study: int
    studies_per_patient: int
    rounds: int
    find_repeats: int
    parallel: int
    get_studies: int
    preload: int
    preload_steps: int
    name_query: str
    date_range: tuple[str, str]
    timeout: float
    seed: int
    phases: tuple[str, ...] = ("single", "parallel")
    get_dir: Path | None = None  # where getscu writes (None: the temp folder)


@dataclass
class Results:
    """Per-round values of every metric for every server, plus the raw records."""

    metrics: dict[str, Metric] = field(default_factory=dict)
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Preload ingest rate per step, per server: one list of step rates per server start.
    growth: dict[str, list[list[float]]] = field(default_factory=dict)
    growth_steps: list[tuple[int, int]] = field(default_factory=list)

    def add(self, server: str, metric: Metric, value: float) -> None:
        self.metrics.setdefault(metric.key, metric)
        self.values.setdefault(server, {}).setdefault(metric.key, []).append(value)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        console.log(f"[yellow]warning:[/] {message}")

    def median(self, server: str, metric: str) -> float | None:
        values = self.values.get(server, {}).get(metric)
        return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------------
# Measurements


def ingest(
    dcmtk: Dcmtk, endpoint: Endpoint, folders: Sequence[Path], timeout: float, log_dir: Path
) -> float:
    """Send every file below *folders* (one storescu, i.e. one association, per folder)."""
    cmds = [dcmtk.store_cmd(endpoint, folder) for folder in folders]
    return run_parallel(cmds, timeout, log_dir, "storescu", dcmtk.env)


def ingest_plan(phase: str, data: GeneratedData) -> tuple[str, list[Path]]:
    """The ingest metric of a phase and the folders it sends, one association per folder."""
    if phase == "single":
        return "ingest_1", [data.root]
    return "ingest_n", list(data.parts)


def sender_limit(
    dcmtk: Dcmtk, folders: Sequence[Path], instances: int, timeout: float, tmp: Path
) -> float | None:
    """Instances/s that storescu sends from *folders* (one association each) to DCMTK's
    ``storescp --ignore``, which reads every byte and stores nothing: the most any archive can
    take from this client on this machine. None when storescp is not installed."""
    tool = dcmtk.tool("storescp")
    if not os.access(tool, os.X_OK):
        return None
    folder = tmp / "sender"
    folder.mkdir(parents=True, exist_ok=True)
    endpoint = Endpoint("NULLSCP", LOOPBACK, free_ports(1)[0])
    cmd = [tool, "--ignore", "--fork", "-aet", endpoint.aet, str(endpoint.port)]
    proc = ManagedProcess("storescp", cmd, folder / "storescp.log", cwd=folder, env=dcmtk.env)
    proc.start()
    try:
        wait_until_echo(dcmtk, endpoint, proc, 30)
        return instances / ingest(dcmtk, endpoint, folders, timeout, folder / "logs")
    finally:
        proc.stop(timeout=1.0)  # storescp ignores SIGTERM; it has nothing to lose


def verify_ingest(
    dcmtk: Dcmtk, endpoint: Endpoint, data: GeneratedData, tmp: Path, results: Results, who: str
) -> None:
    """Check with a study-level C-FIND that every study (and instance) arrived."""
    extract = tmp / "verify"
    shutil.rmtree(extract, ignore_errors=True)
    extract.mkdir(parents=True)
    keys = {
        "QueryRetrieveLevel": "STUDY",
        "PatientName": f"{data.prefix}^*",
        "StudyInstanceUID": "",
        "NumberOfStudyRelatedInstances": "",
    }
    cmd = dcmtk.find_cmd(endpoint, keys, extract)
    run_tool(cmd, FIND_TIMEOUT, "findscu (verification)", dcmtk.env)
    found: dict[str, int | None] = {}
    for path in extract.glob("rsp*.dcm"):
        ds = dcmread(path)
        count = ds.get("NumberOfStudyRelatedInstances")
        found[str(ds.get("StudyInstanceUID", ""))] = int(count) if count not in (None, "") else None
    shutil.rmtree(extract, ignore_errors=True)
    expected = {s.study_uid: s.instances for s in data.studies}
    missing = set(expected) - set(found)
    if missing:
        results.warn(f"{who}: {len(missing)} of {len(expected)} studies missing after ingest")
    wrong = [uid for uid, n in expected.items() if found.get(uid) not in (None, n)]
    if wrong:
        results.warn(
            f"{who}: NumberOfStudyRelatedInstances differs from what was sent for "
            f"{len(wrong)} studies"
        )


def timed_calls(
    dcmtk: Dcmtk,
    cmd: Sequence[str],
    repeats: int,
    what: str,
    expected: int | None,
    results: Results,
    who: str,
) -> list[float]:
    """Run *cmd* *repeats* times; return each call's wall time in milliseconds.

    With *expected*, also check the number of C-FIND matches of every call.
    """
    times: list[float] = []
    counts: set[int] = set()
    env = dcmtk.env
    for _ in range(repeats):
        start = time.perf_counter()
        proc = run_tool(cmd, FIND_TIMEOUT, what, env)
        times.append((time.perf_counter() - start) * 1000)
        if expected is not None:
            counts.add(count_find_responses(proc.stdout + proc.stderr))
    if expected is not None and counts != {expected}:
        results.warn(f"{who}: {what} returned {sorted(counts)} matches, expected {expected}")
    return times


def retrieve(
    dcmtk: Dcmtk,
    endpoint: Endpoint,
    data: GeneratedData,
    count: int,
    timeout: float,
    tmp: Path,
    results: Results,
    who: str,
) -> tuple[float, int]:
    """C-GET *count* studies one after the other; return (seconds, bytes received)."""
    seconds = 0.0
    received = 0
    for index, study in enumerate(data.studies[:count]):
        target = Path(tempfile.mkdtemp(prefix="vesalius-get-", dir=tmp))
        try:
            cmd = dcmtk.get_cmd(endpoint, study.study_uid, target)
            start = time.perf_counter()
            run_tool(cmd, timeout, "getscu", dcmtk.env)
            seconds += time.perf_counter() - start
            files, nbytes = tree_size(target)
        finally:
            shutil.rmtree(target, ignore_errors=True)
        received += nbytes
        if files != study.instances:
            results.warn(
                f"{who}: C-GET of study {index + 1} returned {files} of {study.instances} instances"
            )
    return seconds, received


# --------------------------------------------------------------------------------------------
# The run


def server_lifetime(
    launcher: Launcher,
    phase: str,
    round_no: int,
    *,
    dcmtk: Dcmtk,
    data: GeneratedData,
    preload: GeneratedData | None,
    opts: Options,
    metrics: dict[str, Metric],
    results: Results,
    tmp: Path,
) -> None:
    """Start a fresh server, measure one phase ('single' or 'parallel'), stop it."""
    who = f"{launcher.label} round {round_no + 1} ({phase})"
    record: dict[str, Any] = {"round": round_no + 1, "server": launcher.key, "phase": phase}
    console.log(f"[bold]{who}[/]: starting a fresh server")
    t0 = time.perf_counter()
    with launcher.run() as endpoint:
        record["startup_s"] = round(time.perf_counter() - t0, 3)
        if preload is not None:
            run_preload(launcher, endpoint, dcmtk, preload, opts, metrics, results, record, tmp)

        key, folders = ingest_plan(phase, data)
        pid = launcher.pid
        before = cpu_times(pid) if pid is not None else None
        secs = ingest(dcmtk, endpoint, folders, opts.timeout, tmp / "logs")
        rate = data.instances / secs
        results.add(launcher.key, metrics[key], rate)
        record.update({f"{key}_s": secs, key: rate})
        console.log(f"{who}: {metrics[key].label}: {rate:.1f} instances/s ({secs:.2f} s)")
        if pid is not None and before is not None:
            used = cpu_times(pid) - before
            user_ms = 1000 * used.user / data.instances
            system_ms = 1000 * used.system / data.instances
            results.add(launcher.key, metrics[f"{key}_cpu"], user_ms + system_ms)
            record.update({
                f"{key}_cpu_user_ms": user_ms,
                f"{key}_cpu_system_ms": system_ms,
                f"{key}_machine_busy": used.busy_share,
            })  # fmt: skip
            console.log(
                f"{who}: server CPU {user_ms + system_ms:.2f} ms per instance (user "
                f"{user_ms:.2f}, system {system_ms:.2f}); machine "
                f"{100 * used.busy_share:.0f}% busy"
            )
        verify_ingest(dcmtk, endpoint, data, tmp, results, who)

        if phase == "single":
            os.sync()
            measure_queries(launcher, endpoint, dcmtk, data, opts, metrics, results, record, tmp)
    results.records.append(record)
    os.sync()  # do not let this server's write-back spill into the next measurement


def run_preload(
    launcher: Launcher,
    endpoint: Endpoint,
    dcmtk: Dcmtk,
    preload: GeneratedData,
    opts: Options,
    metrics: dict[str, Metric],
    results: Results,
    record: dict[str, Any],
    tmp: Path,
) -> None:
    """Store the preload set in steps (each over N associations), timing every step."""
    who = f"{launcher.label} round {record['round']} ({record['phase']})"
    console.log(f"{who}: preloading {preload.instances} instances")
    steps: list[float] = []
    bounds: list[tuple[int, int]] = []
    stored = 0
    total_s = 0.0
    for folders, count in preload.batches(opts.parallel):
        secs = ingest(dcmtk, endpoint, folders, opts.timeout, tmp / "logs")
        steps.append(count / secs)
        bounds.append((stored, stored + count))
        stored += count
        total_s += secs
    rate = stored / total_s
    results.add(launcher.key, metrics["preload"], rate)
    results.growth.setdefault(launcher.key, []).append(steps)
    results.growth_steps = bounds
    record.update(preload_s=total_s, preload_rate=rate, preload_step_rates=steps)
    console.log(
        f"{who}: preload {rate:.1f} instances/s; per step " + ", ".join(f"{r:.0f}" for r in steps)
    )
    os.sync()


def measure_queries(
    launcher: Launcher,
    endpoint: Endpoint,
    dcmtk: Dcmtk,
    data: GeneratedData,
    opts: Options,
    metrics: dict[str, Metric],
    results: Results,
    record: dict[str, Any],
    tmp: Path,
) -> None:
    who = f"{launcher.label} round {record['round']}"
    n = opts.find_repeats
    echo = timed_calls(dcmtk, dcmtk.echo_cmd(endpoint), n, "echoscu", None, results, who)
    by_name = {**STUDY_KEYS, "PatientName": opts.name_query}
    by_date = {**STUDY_KEYS, "StudyDate": "-".join(opts.date_range)}
    n_name = len(data.studies_matching(name_pattern=opts.name_query))
    n_date = len(data.studies_matching(date_range=opts.date_range))
    find_name = dcmtk.find_cmd(endpoint, by_name)
    find_date = dcmtk.find_cmd(endpoint, by_date)
    name_ms = timed_calls(dcmtk, find_name, n, "findscu (name)", n_name, results, who)
    date_ms = timed_calls(dcmtk, find_date, n, "findscu (date)", n_date, results, who)
    # The server's own latency: the same queries repeated on one open association.
    assoc = FindAssociation(endpoint.host, endpoint.port, endpoint.aet, SCU_AET, opts.timeout)
    try:
        on_assoc = {}
        for key, keys, expected in (("name", by_name, n_name), ("date", by_date, n_date)):
            on_assoc[key], counts = assoc.timed_finds(keys, n * ASSOC_REPEATS)
            if counts != {expected}:
                results.warn(f"{who}: C-FIND {key} on one association returned {sorted(counts)}")
    finally:
        assoc.release()
    samples_of = {
        "echo": echo,
        "find_name": name_ms,
        "find_date": date_ms,
        "find_name_assoc": on_assoc["name"],
        "find_date_assoc": on_assoc["date"],
    }
    for key, samples in samples_of.items():
        results.add(launcher.key, metrics[key], statistics.median(samples))
        record[f"{key}_ms"] = samples
    console.log(
        f"{who}: C-ECHO {statistics.median(echo):.1f} ms, C-FIND name "
        f"{statistics.median(name_ms):.1f} ms ({n_name} studies), C-FIND date "
        f"{statistics.median(date_ms):.1f} ms ({n_date} studies); on one association "
        f"{statistics.median(on_assoc['name']):.2f} / {statistics.median(on_assoc['date']):.2f} ms"
    )
    count = min(opts.get_studies or len(data.studies), len(data.studies))
    secs, nbytes = retrieve(
        dcmtk, endpoint, data, count, opts.timeout, opts.get_dir or tmp, results, who
    )
    mb_s = nbytes / 1e6 / secs
    results.add(launcher.key, metrics["get"], mb_s)
    record.update(get_s=secs, get_bytes=nbytes, get_mb_s=mb_s)
    console.log(f"{who}: C-GET {count} studies, {nbytes / 1e6:.1f} MB: {mb_s:.1f} MB/s")


def build_metrics(opts: Options) -> dict[str, Metric]:
    n = opts.parallel
    metrics = [
        Metric("ingest_1", "Ingest, 1 association", "inst/s", True),
        Metric("ingest_n", f"Ingest, {n} parallel associations", "inst/s", True),
        Metric("ingest_1_cpu", "Server CPU per instance, 1 association", "ms", False),
        Metric("ingest_n_cpu", f"Server CPU per instance, {n} associations", "ms", False),
        Metric("echo", "C-ECHO (process + association)", "ms", False),
        Metric("find_name", f"C-FIND study, PatientName={opts.name_query}", "ms", False),
        Metric("find_date", f"C-FIND study, StudyDate={'-'.join(opts.date_range)}", "ms", False),
        Metric("find_name_assoc", "C-FIND name, on one open association", "ms", False),
        Metric("find_date_assoc", "C-FIND date, on one open association", "ms", False),
        Metric("get", "C-GET study level, 1 association per study", "MB/s", True),
    ]
    if opts.preload:
        metrics.append(Metric("preload", f"Preload ingest 64x64, {n} associations", "inst/s", True))
    return {m.key: m for m in metrics}


def run_benchmark(
    launchers: Sequence[Launcher],
    dcmtk: Dcmtk,
    data: GeneratedData,
    preload: GeneratedData | None,
    opts: Options,
    tmp: Path,
) -> Results:
    results = Results()
    metrics = build_metrics(opts)
    results.metrics.update(metrics)
    instance_size = data.nbytes // max(data.instances, 1)
    for round_no in range(opts.rounds):
        order = list(launchers) if round_no % 2 == 0 else list(reversed(launchers))
        for metric, threads in (("ingest_1", 1), ("ingest_n", opts.parallel)):
            rate = fsync_limit(tmp / "limit", instance_size, threads=threads)
            results.add(LIMIT, metrics[metric], rate)
            console.log(
                f"disk limit, round {round_no + 1}: {rate:.0f} fsync'd {instance_size // 1024} KB "
                f"files/s on {threads} thread(s)"
            )
        for phase in opts.phases:
            metric, folders = ingest_plan(phase, data)
            rate = sender_limit(dcmtk, folders, data.instances, opts.timeout, tmp)
            if rate is not None:
                results.add(SENDER, metrics[metric], rate)
                console.log(
                    f"sender limit, round {round_no + 1}: storescu sends {rate:.0f} instances/s "
                    f"to an SCP that stores nothing, over {len(folders)} association(s)"
                )
        for phase in opts.phases:
            for launcher in order:
                server_lifetime(
                    launcher, phase, round_no, dcmtk=dcmtk, data=data, preload=preload,
                    opts=opts, metrics=metrics, results=results, tmp=tmp,
                )  # fmt: skip
    return results


# --------------------------------------------------------------------------------------------
# Reporting


def ratio(metric: Metric, vesalius: float | None, orthanc: float | None) -> float | None:
    """Vesalius relative to Orthanc, oriented so that > 1 always means Vesalius is better."""
    if not vesalius or not orthanc:
        return None
    return vesalius / orthanc if metric.higher_is_better else orthanc / vesalius


def round_ratios(results: Results, metric: Metric) -> list[float]:
    """:func:`ratio` round by round (both servers measure each metric once per round): their
    spread says how far the median ratio can be trusted on a noisy machine."""
    mine = results.values.get("vesalius", {}).get(metric.key, [])
    theirs = results.values.get("orthanc", {}).get(metric.key, [])
    if len(mine) != len(theirs):
        return []
    pairs = (ratio(metric, v, o) for v, o in zip(mine, theirs, strict=True))
    return [r for r in pairs if r is not None]


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def print_table(results: Results, launchers: Sequence[Launcher], opts: Options) -> None:
    keys = [launcher.key for launcher in launchers]
    both = {"orthanc", "vesalius"} <= set(keys)
    table = Table(
        title=f"DIMSE benchmark: median of {opts.rounds} round(s) [min - max]",
        caption="ratio: Vesalius relative to Orthanc, oriented so that >1 means Vesalius is "
        "better (throughput V/O, latency O/V)"
        if both
        else None,
    )
    table.add_column("Metric")
    table.add_column("Unit")
    for launcher in launchers:
        table.add_column(launcher.label, justify="right")
    limited = LIMIT in results.values
    if limited:
        keys.append(LIMIT)
        table.add_column("Limit: fsync'd\nfile writes", justify="right")
    if SENDER in results.values:
        keys.append(SENDER)
        table.add_column("Limit: storescu to\na null SCP", justify="right")
    if both:
        table.add_column("Vesalius vs Orthanc\n(>1 = Vesalius better)", justify="right")
        table.add_column("Ratio per\nround", justify="right")
    if limited and "vesalius" in keys:
        table.add_column("Vesalius /\nlimit", justify="right")
    for metric in results.metrics.values():
        row = [metric.label, metric.unit]
        for key in keys:
            values = results.values.get(key, {}).get(metric.key, [])
            if values:
                row.append(
                    f"{fmt(statistics.median(values))} "
                    f"[dim][{fmt(min(values))} - {fmt(max(values))}][/]"
                )
            else:
                row.append("-")
        if both:
            r = ratio(
                metric,
                results.median("vesalius", metric.key),
                results.median("orthanc", metric.key),
            )
            row.append("-" if r is None else f"[{'green' if r >= 1 else 'red'}]{r:.2f}x[/]")
            row.append(" ".join(f"{x:.2f}" for x in round_ratios(results, metric)) or "-")
        if limited and "vesalius" in keys:
            limit = results.median(LIMIT, metric.key)
            mine = results.median("vesalius", metric.key)
            row.append(f"{mine / limit:.0%}" if limit and mine else "-")
        table.add_row(*row)
    out.print(table)
    if results.growth:
        print_growth(results, launchers)
    for message in results.warnings:
        out.print(f"[yellow]warning:[/] {message}")


def print_growth(results: Results, launchers: Sequence[Launcher]) -> None:
    """Preload ingest rate per step: does ingest stay flat as the index grows?"""
    keys = [launcher.key for launcher in launchers if launcher.key in results.growth]
    both = {"orthanc", "vesalius"} <= set(keys)
    table = Table(
        title="Preload ingest (64x64) as the index grows: inst/s, median over server starts"
    )
    table.add_column("Instances already stored")
    for launcher in launchers:
        if launcher.key in keys:
            table.add_column(launcher.label, justify="right")
    if both:
        table.add_column("Vesalius vs Orthanc", justify="right")
    for step, (low, high) in enumerate(results.growth_steps):
        row = [f"{low:,} -> {high:,}"]
        medians: dict[str, float] = {}
        for key in keys:
            medians[key] = statistics.median(runs[step] for runs in results.growth[key])
            row.append(fmt(medians[key]))
        if both:
            r = medians["vesalius"] / medians["orthanc"]
            row.append(f"[{'green' if r >= 1 else 'red'}]{r:.2f}x[/]")
        table.add_row(*row)
    out.print(table)


def summary(results: Results) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for metric in results.metrics.values():
        entry: dict[str, Any] = {
            "label": metric.label,
            "unit": metric.unit,
            "higher_is_better": metric.higher_is_better,
        }
        for server, by_metric in results.values.items():
            values = by_metric.get(metric.key)
            if values:
                entry[server] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "values": values,
                }
        entry["ratio_vesalius_vs_orthanc"] = ratio(
            metric, results.median("vesalius", metric.key), results.median("orthanc", metric.key)
        )
        entry["ratio_per_round"] = round_ratios(results, metric)
        data[metric.key] = entry
    return data


def git_commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


# --------------------------------------------------------------------------------------------
# Command line


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, but not the empty ones (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the DIMSE services of Vesalius and Orthanc side by side. "
        "Every server start is fresh and empty; see benchmarks/README.md.",
        formatter_class=_HelpFormatter,
    )
    data = parser.add_argument_group("data set")
    data.add_argument("--instances", type=int, help="instances to send (default 2000; quick 100)")
    data.add_argument(
        "--instances-per-series", type=int, help="instances per series (default 50; quick 10)"
    )
    data.add_argument("--series-per-study", type=int, default=2, help="series per study")
    data.add_argument("--studies-per-patient", type=int, default=2, help="studies per patient")
    data.add_argument("--seed", type=int, default=0, help="seed for UIDs, dates and pixels")
    data.add_argument(
        "--preload",
        type=int,
        default=0,
        metavar="N",
        help="store N extra small (64x64) instances in every fresh server before measuring, "
        "to see whether ingest and queries stay flat as the index grows (e.g. 50000)",
    )
    data.add_argument(
        "--preload-steps",
        type=int,
        default=10,
        help="time the preload in this many steps to show the ingest rate as the index grows",
    )
    run = parser.add_argument_group("measurements")
    run.add_argument("--quick", action="store_true", help="smoke run: 100 instances, 1 round")
    run.add_argument("--rounds", type=int, help="rounds per server (default 5; quick 1)")
    run.add_argument(
        "--find-repeats", type=int, help="calls per C-FIND/C-ECHO median (default 30; quick 5)"
    )
    run.add_argument("--parallel", type=int, default=4, help="associations for parallel ingest")
    run.add_argument(
        "--phases",
        nargs="+",
        choices=["single", "parallel"],
        default=["single", "parallel"],
        help="server starts per round: 'single' (1-association ingest, C-ECHO, C-FIND, C-GET), "
        "'parallel' (ingest over --parallel associations); each preloads first. "
        "'--preload 250000 --phases single' measures the growth once",
    )
    run.add_argument("--get-studies", type=int, default=0, help="studies to C-GET; 0 = all")
    run.add_argument(
        "--get-dir",
        type=Path,
        default=default_get_dir(),
        help="where getscu writes the files it receives (default: /dev/shm when there is one, "
        "else the temp folder): on a disk, the client's file creation is timed too",
    )
    run.add_argument("--name-query", default="BENCH^PATIENT000*", help="PatientName wildcard")
    run.add_argument("--date-range", default="20210101-20221231", help="StudyDate range")
    run.add_argument(
        "--timeout", type=float, default=3600, help="seconds allowed per storescu/getscu run"
    )
    run.add_argument("--startup-timeout", type=float, default=60, help="seconds to start a server")
    run.add_argument(
        "--servers",
        nargs="+",
        choices=["orthanc", "vesalius"],
        default=["orthanc", "vesalius"],
        help="servers to measure",
    )
    ves = parser.add_argument_group("Vesalius")
    ves.add_argument(
        "--vesalius-cmd",
        default=shlex.join(default_vesalius_command()),
        help="command that starts the server (VESALIUS_* variables are set by the benchmark)",
    )
    ves.add_argument(
        "--vesalius-db-url",
        help="index database, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/vesbench "
        "(default: SQLite in the fresh data folder). The database is DROPPED and re-created "
        "before every server start: use a dedicated one",
    )
    ves.add_argument(
        "--no-db-reset", action="store_true", help="do not empty --vesalius-db-url between runs"
    )
    ves.add_argument(
        "--vesalius-migrate-cmd",
        help="command that creates the schema in --vesalius-db-url before every start "
        "(default: the serve command with 'serve' replaced by 'db upgrade')",
    )
    ves.add_argument("--vesalius-log-level", default="WARNING", help="VESALIUS_LOG_LEVEL")
    add_vesalius_options(ves)
    orth = parser.add_argument_group("Orthanc and DCMTK")
    orth.add_argument(
        "--orthanc-bin", type=Path, default=Path("/usr/sbin/Orthanc"), help="Orthanc executable"
    )
    orth.add_argument(
        "--orthanc-option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help='override an Orthanc setting, e.g. MaximumPduLength=131072 or "SyncStorageArea=false"'
        " (repeatable)",
    )
    orth.add_argument(
        "--dcmtk-dir", type=Path, default=Path("/usr/bin"), help="folder of DCMTK's tools"
    )
    orth.add_argument(
        "--keep-nagle",
        action="store_true",
        help="do not set TCP_NODELAY=1 for DCMTK tools and Orthanc (Debian's DCMTK then keeps "
        "Nagle's algorithm on: ~40 ms stalls per exchange on loopback)",
    )
    outp = parser.add_argument_group("output")
    outp.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    outp.add_argument("--workdir", type=Path, help="parent of the temp folder (default: $TMPDIR)")
    outp.add_argument("--keep-temp", action="store_true", help="keep the temp folder")
    return parser.parse_args(argv)


def default_get_dir() -> Path | None:
    """Memory (/dev/shm) when this machine has it: C-GET measures the server's sending, and on
    ext4 without a journal each file getscu creates can cost a scan of the inodes the
    benchmark deleted in the last minutes (0.5 ms per file was measured here)."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def make_options(args: argparse.Namespace) -> Options:
    def pick(value: int | None, normal: int, quick: int) -> int:
        return value if value is not None else (quick if args.quick else normal)

    low, sep, high = args.date_range.partition("-")
    if not sep or len(low) != 8 or len(high) != 8 or not (low + high).isdigit():
        raise BenchError(f"--date-range must look like 20210101-20221231, not {args.date_range!r}")
    opts = Options(
        instances=pick(args.instances, 2000, 100),
        instances_per_series=pick(args.instances_per_series, 50, 10),
        series_per_study=args.series_per_study,
        studies_per_patient=args.studies_per_patient,
        rounds=pick(args.rounds, 5, 1),
        find_repeats=pick(args.find_repeats, 30, 5),
        parallel=args.parallel,
        get_studies=args.get_studies,
        preload=args.preload,
        preload_steps=args.preload_steps,
        name_query=args.name_query,
        date_range=(low, high),
        timeout=args.timeout,
        seed=args.seed,
        phases=tuple(args.phases),
        get_dir=args.get_dir,
    )
    for name in ("instances", "instances_per_series", "series_per_study", "studies_per_patient",
                 "rounds", "find_repeats", "parallel", "preload_steps"):  # fmt: skip
        if getattr(opts, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1")
    if opts.preload < 0 or opts.get_studies < 0:
        raise BenchError("--preload and --get-studies cannot be negative")
    return opts


def orthanc_options(items: Sequence[str]) -> dict[str, object]:
    options: dict[str, object] = {}
    for key, raw in key_values(items, "--orthanc-option").items():
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw  # a bare string
    return options


def check_disk(parent: Path, opts: Options) -> None:
    """Fail early if the temp folder's disk cannot hold data, one server's copy and a C-GET."""
    need = opts.instances * (512 * 512 * 2 + 4096) * 2.5 + opts.preload * (64 * 64 * 2 + 4096) * 3
    free = shutil.disk_usage(parent).free
    if free < need:
        raise BenchError(
            f"about {need / 1e9:.1f} GB of free space needed in {parent}, {free / 1e9:.1f} GB "
            "available: use --workdir elsewhere or fewer --instances"
        )


@dataclass
class Progressor:
    """A rich progress bar for data generation."""

    description: str
    total: int
    _progress: Progress | None = None

    def __enter__(self) -> Callable[[int], None]:
        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._progress.start()
        task = self._progress.add_task(self.description, total=self.total)
        progress = self._progress

        def advance(n: int) -> None:
            progress.advance(task, n)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def generate(tmp: Path, opts: Options) -> tuple[GeneratedData, GeneratedData | None]:
    start = time.perf_counter()
    with Progressor("generating data set", opts.instances) as advance:
        data = generate_data(
            tmp / "data",
            opts.instances,
            instances_per_series=opts.instances_per_series,
            series_per_study=opts.series_per_study,
            studies_per_patient=opts.studies_per_patient,
            parts=opts.parallel,
            seed=opts.seed,
            progress=advance,
        )
    info = data.summary()
    console.log(
        f"data set: {data.instances} CT instances 512x512x16 bit, {data.nbytes / 1e6:.0f} MB, "
        f"{info['patients']} patients, {info['studies']} studies, parts {info['parts']} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    preload = None
    if opts.preload:
        # Whole studies of 50 instances go round-robin to parallel x steps folders; step k sends
        # folders k*parallel .. k*parallel+parallel-1, one association each.
        studies = -(-opts.preload // 50)
        steps = max(1, min(opts.preload_steps, studies // opts.parallel))
        start = time.perf_counter()
        with Progressor("generating preload set", opts.preload) as advance:
            preload = generate_data(
                tmp / "preload",
                opts.preload,
                prefix="PRELOAD",
                rows=64,
                columns=64,
                instances_per_series=25,
                series_per_study=2,
                studies_per_patient=1,
                first_date=date(2010, 1, 1),
                last_date=date(2014, 12, 31),
                parts=opts.parallel * steps,
                seed=opts.seed,
                progress=advance,
            )
        console.log(
            f"preload set: {preload.instances} instances 64x64, {preload.nbytes / 1e6:.0f} MB "
            f"({time.perf_counter() - start:.1f} s)"
        )
    return data, preload


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    tmp: Path | None = None
    try:
        opts = make_options(args)
        dcmtk = Dcmtk.locate(args.dcmtk_dir, tcp_nodelay=not args.keep_nagle)
        parent = args.workdir or Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        check_disk(parent, opts)
        tmp = Path(tempfile.mkdtemp(prefix="vesalius-dimse-bench-", dir=parent))
        launchers: list[Launcher] = []
        for name in dict.fromkeys(args.servers):
            if name == "orthanc":
                launchers.append(
                    OrthancLauncher(
                        binary=OrthancLauncher.locate(args.orthanc_bin),
                        dcmtk=dcmtk,
                        workdir=tmp,
                        extra_config=orthanc_options(args.orthanc_option),
                        tcp_nodelay=not args.keep_nagle,
                        startup_timeout=args.startup_timeout,
                    )
                )
            else:
                vesalius = VesaliusLauncher(
                    command=shlex.split(args.vesalius_cmd),
                    dcmtk=dcmtk,
                    workdir=tmp,
                    database_url=args.vesalius_db_url,
                    reset_db=not args.no_db_reset,
                    log_level=args.vesalius_log_level,
                    workers=args.vesalius_workers,
                    extra_env=key_values(args.vesalius_env, "--vesalius-env"),
                    migrate_command=shlex.split(args.vesalius_migrate_cmd)
                    if args.vesalius_migrate_cmd
                    else None,
                    startup_timeout=args.startup_timeout,
                )
                vesalius.check()
                launchers.append(vesalius)
        versions = {launcher.key: launcher.version() for launcher in launchers}
        versions["dcmtk"] = dcmtk.version()
        console.log(f"versions: {versions}; temp folder {tmp}")
        started = datetime.now(UTC).isoformat(timespec="seconds")
        data, preload = generate(tmp, opts)
        os.sync()  # write the generated files out now, not during the first measurement
        results = run_benchmark(launchers, dcmtk, data, preload, opts, tmp)
        print_table(results, launchers, opts)
        if args.json:
            report = {
                "benchmark": "dimse",
                "started": started,
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "options": {
                    **{k: v for k, v in vars(opts).items() if k not in ("date_range", "get_dir")},
                    "date_range": "-".join(opts.date_range),
                    "get_dir": str(opts.get_dir) if opts.get_dir else None,
                    "servers": [launcher.key for launcher in launchers],
                    "vesalius_cmd": args.vesalius_cmd,
                    "vesalius_db_url": mask_url(args.vesalius_db_url or "") or None,
                    "orthanc_options": orthanc_options(args.orthanc_option),
                    "tcp_nodelay": not args.keep_nagle,
                },
                "environment": {
                    "versions": versions,
                    "git_commit": git_commit(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                },
                "dataset": data.summary(),
                "preload": preload.summary() if preload else None,
                "preload_growth": {
                    "steps": results.growth_steps,
                    "rates": results.growth,
                },
                "summary": summary(results),
                "measurements": results.records,
                "warnings": results.warnings,
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
            console.log(f"results written to {args.json}")
        return 1 if results.warnings else 0
    except BenchError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        return 130
    finally:
        if tmp is not None:
            if args.keep_temp:
                console.log(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
