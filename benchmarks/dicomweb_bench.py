#!/usr/bin/env python3
"""DICOMweb benchmark: Vesalius and Orthanc + its DICOMweb plugin side by side, over HTTP.

Both servers start empty (fresh temp folders) and are loaded over STOW-RS, which is the first
measurement. Then, on the same data:

* STOW-RS ingest (instances/s): the big series (``--series-instances`` images of
  ``--rows``x``--rows``) and the small studies (``--studies`` one-instance studies), each posted
  by ``--parallel`` clients in batches of ``--batch`` instances per request;
* QIDO-RS ``/studies`` median latency with >= 1,000 studies archived, for an exact PatientID,
  a PatientName wildcard, a StudyDate range and OHIF's first page
  (``limit=101&offset=0&fuzzymatching=false&includefield=...``);
* WADO-RS whole-study retrieve throughput (MB/s, 1 MB = 10^6 bytes) of the big series' study,
  as stored (``transfer-syntax=*``), reading the streamed answer;
* ``/metadata`` of the big series (ms), first call and median of the next ones.

Every figure is the median of ``--rounds`` rounds (fresh servers each round, their order
flipped every round), printed for both servers with the ratio Orthanc / Vesalius for times
(above 1: Vesalius is faster) and Vesalius / Orthanc for rates (above 1: Vesalius is faster):
the median of the per-round ratios, so that a noisy machine slows both sides of a ratio alike.
The STOW-RS rows also get two **limits**, measured in the same rounds: how many files of that
instance size this disk makes durable per second (written, fsync'd, renamed, folder fsync'd),
and how many instances per second the same client posts, in the same requests, to a server
that reads each body and stores nothing (``null_http.py``, the **sender limit**).

Examples
--------
    .venv/bin/python benchmarks/dicomweb_bench.py                 # 1,000 studies + 500 images
    .venv/bin/python benchmarks/dicomweb_bench.py --studies 200 --series-instances 100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _common import (
    STOW_TYPE,
    BenchError,
    Dcmtk,
    Endpoint,
    GeneratedData,
    ManagedProcess,
    OrthancLauncher,
    VesaliusLauncher,
    add_vesalius_options,
    default_vesalius_command,
    find_orthanc_plugin,
    free_ports,
    fsync_limit,
    generate_data,
    in_requests,
    key_values,
    wait_http,
)

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OHIF_INCLUDE = "00081030,00080060"


@dataclass
class Data:
    """The two data sets: many small studies, and one study with one big series."""

    small: GeneratedData
    big: GeneratedData

    @property
    def big_study(self) -> str:
        return self.big.studies[0].study_uid


@dataclass
class Results:
    server: str
    version: str
    figures: dict[str, float] = field(default_factory=dict)


def _files(data: GeneratedData) -> list[Path]:
    return sorted(p for part in data.parts for p in part.glob("*.dcm"))


def stow(base: str, files: list[Path], batch: int, parallel: int, auth: dict[str, str]) -> float:
    """Post every file (batches, parallel clients); instances per second."""
    bodies = in_requests(files, batch)  # built before the clock starts
    local = threading.local()

    def post(body: bytes) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=600, headers=auth)
        response = client.post(f"{base}/studies", content=body, headers={"Content-Type": STOW_TYPE})
        if response.status_code != 200:
            raise BenchError(f"STOW-RS answered {response.status_code}: {response.text[:500]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(post, bodies))
    elapsed = time.perf_counter() - start
    return len(files) / elapsed


def median_ms(call: Callable[[], Any], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def qido(client: httpx.Client, base: str, params: dict[str, str], expect: int | None) -> None:
    # Values go unencoded ("^", "*", ","): Orthanc's DICOMweb 1.7 does not percent-decode
    # query values, so QIDO^X* sent as QIDO%5EX* matches nothing there.
    query = "&".join(f"{k}={v}" for k, v in params.items())
    response = client.get(f"{base}/studies?{query}", headers={"Accept": "application/dicom+json"})
    response.raise_for_status()
    if expect is not None:
        found = len(response.json()) if response.content else 0
        if found != expect:
            raise BenchError(f"QIDO {params} found {found} studies, expected {expect}")


def retrieve(client: httpx.Client, url: str) -> int:
    total = 0
    with client.stream("GET", url, headers={"Accept": AS_STORED}) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 20):
            total += len(chunk)
    return total


def measure(
    name: str,
    base: str,
    data: Data,
    args: argparse.Namespace,
    out: Results,
    auth: dict[str, str],
) -> None:
    log = lambda msg: print(f"  [{name}] {msg}", flush=True)  # noqa: E731
    big_files, small_files = _files(data.big), _files(data.small)
    log(f"STOW-RS {len(big_files)} big instances ...")
    out.figures["stow_big_instances_per_s"] = stow(base, big_files, args.batch, args.parallel, auth)
    log(f"STOW-RS {len(small_files)} small studies ...")
    out.figures["stow_small_instances_per_s"] = stow(
        base, small_files, args.batch, args.parallel, auth
    )
    with httpx.Client(timeout=600, headers=auth) as client:
        someone = data.small.studies[len(data.small.studies) // 2]
        low, high = "20210101", "20211231"
        in_range = sum(1 for s in data.small.studies if low <= s.study_date <= high)
        in_range += 1 if low <= data.big.studies[0].study_date <= high else 0
        prefix = someone.patient_name[:-2] + "*"
        by_name = sum(1 for s in data.small.studies if s.patient_name.startswith(prefix[:-1]))
        queries = {
            "qido_patient_id_ms": ({"PatientID": someone.patient_id}, None),
            "qido_name_wildcard_ms": ({"PatientName": prefix}, by_name),
            "qido_date_range_ms": ({"StudyDate": f"{low}-{high}"}, in_range),
            "qido_ohif_first_page_ms": (
                {
                    "limit": "101",
                    "offset": "0",
                    "fuzzymatching": "false",
                    "includefield": OHIF_INCLUDE,
                },
                min(101, len(data.small.studies) + 1),
            ),
        }
        for key, (params, expect) in queries.items():
            qido(client, base, params, expect)
            out.figures[key] = median_ms(lambda p=params: qido(client, base, p, None), args.repeat)
            log(f"{key} = {out.figures[key]:.2f}")
        url = f"{base}/studies/{data.big_study}"
        sizes = []
        speeds = []
        for _ in range(args.retrieve_repeat):
            start = time.perf_counter()
            sizes.append(retrieve(client, url))
            speeds.append(sizes[-1] / (time.perf_counter() - start) / 1e6)
        out.figures["wado_study_mb_per_s"] = statistics.median(speeds)
        out.figures["wado_study_mb"] = sizes[-1] / 1e6
        rate = out.figures["wado_study_mb_per_s"]
        log(f"WADO-RS study {sizes[-1] / 1e6:.0f} MB at {rate:.0f} MB/s")
        series = data.big_series
        meta = f"{base}/studies/{data.big_study}/series/{series}/metadata"

        def get_meta() -> None:
            response = client.get(meta, headers={"Accept": "application/dicom+json"})
            response.raise_for_status()
            if len(response.json()) != len(big_files):
                raise BenchError("metadata answered the wrong number of instances")

        start = time.perf_counter()
        get_meta()
        out.figures["metadata_series_first_ms"] = (time.perf_counter() - start) * 1000
        out.figures["metadata_series_ms"] = median_ms(get_meta, args.meta_repeat, warmup=0)
        log(f"metadata ({len(big_files)} instances) = {out.figures['metadata_series_ms']:.1f} ms")


# Ratios: for times Orthanc/Vesalius, for rates Vesalius/Orthanc (>1: Vesalius faster).
RATES = ("stow_big_instances_per_s", "stow_small_instances_per_s", "wado_study_mb_per_s")


# The STOW-RS rows that get a limit row: the disk's durable writes of files of that size.
LIMIT_SIZES = ("stow_big_instances_per_s", "stow_small_instances_per_s")


def report(
    rounds: list[dict[str, Results]],
    limits: dict[str, list[float]],
    senders: dict[str, list[float]],
) -> dict[str, Any]:
    """Print medians over the rounds, the median per-round ratio, and the limit rows."""
    servers = list(rounds[0])
    keys = list(rounds[0][servers[0]].figures)

    def median(server: str, key: str) -> float:
        return statistics.median(r[server].figures.get(key, float("nan")) for r in rounds)

    both = "vesalius" in servers and "orthanc" in servers
    print()
    print(
        f"{'measure (median of ' + str(len(rounds)) + ' rounds)':34} "
        + " ".join(f"{name:>12}" for name in servers)
        + "   ratio   of limit   ratio per round"
    )
    ratios: dict[str, float] = {}
    per_round: dict[str, list[float]] = {}
    for key in keys:
        row = f"{key:34} " + " ".join(f"{median(name, key):12.2f}" for name in servers)
        if both and key != "wado_study_mb":
            paired = []
            for r in rounds:
                v, o = r["vesalius"].figures[key], r["orthanc"].figures[key]
                paired.append(v / o if key in RATES else o / v)
            ratios[key] = statistics.median(paired)
            per_round[key] = paired
            row += f"   {ratios[key]:6.2f}x"
        if key in limits and "vesalius" in servers:
            row += f"   {median('vesalius', key) / statistics.median(limits[key]):6.0%}"
        elif key in per_round:
            row += " " * 10
        if key in per_round:
            row += "   " + " ".join(f"{x:.2f}" for x in per_round[key])
        print(row)
        if key in limits:
            print(f"{'  limit (durable files/s)':34} {statistics.median(limits[key]):12.2f}")
        if senders.get(key):
            sent = statistics.median(senders[key])
            row = f"{'  sender limit (to a null server)':34} {sent:12.2f}"
            if "vesalius" in servers:
                row += f"   Vesalius at {median('vesalius', key) / sent:.0%} of it"
            print(row)
    print("\nratio > 1 means Vesalius is faster (rates: V/O, times: O/V); each ratio is the")
    print("median of the per-round ratios; 'of limit' is Vesalius' rate over the disk's limit")
    return {
        "servers": {
            name: {"version": rounds[0][name].version, **{k: median(name, k) for k in keys}}
            for name in servers
        },
        "ratios": ratios,
        "ratios_per_round": per_round,
        "limits": {key: statistics.median(values) for key, values in limits.items()},
        "sender_limits": {key: statistics.median(v) for key, v in senders.items() if v},
        "rounds": [{name: result.figures for name, result in r.items()} for r in rounds],
    }


@contextlib.contextmanager
def null_server(workdir: Path) -> Iterator[str]:
    """The URL of a ``null_http.py`` server for the sender limit, stopped on leaving."""
    port = free_ports(1)[0]
    folder = workdir / "null-http"
    folder.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("null_http.py")
    proc = ManagedProcess(
        "null_http", [sys.executable, str(script), str(port)], folder / "log", cwd=folder
    )
    proc.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url, timeout=30)
        yield url
    finally:
        proc.stop(timeout=5.0)


@contextlib.contextmanager
def _server(
    name: str, args: argparse.Namespace, dcmtk: Dcmtk, workdir: Path
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """The server's DICOMweb root, its version, and the headers that authenticate to it."""
    if name == "orthanc":
        launcher = OrthancLauncher(
            OrthancLauncher.locate(args.orthanc),
            dcmtk,
            workdir,
            plugins=[find_orthanc_plugin()],
            http=True,
            extra_config={"DicomWeb": {"Enable": True, "Root": "/dicom-web/"}},
        )
        version = launcher.version()
    else:
        launcher = VesaliusLauncher(  # type: ignore[assignment]
            args.vesalius_cmd or default_vesalius_command(),
            dcmtk,
            workdir,
            database_url=args.database_url,
            workers=args.vesalius_workers,
            extra_env=key_values(args.vesalius_env, "--vesalius-env"),
        )
        launcher.check()  # type: ignore[attr-defined]
        version = launcher.version()
    with launcher.run() as endpoint:
        assert isinstance(endpoint, Endpoint) and endpoint.http_url
        wait_http(endpoint.http_url + "/dicom-web/studies?limit=1")
        auth: dict[str, str] = {}
        if isinstance(launcher, VesaliusLauncher):  # Vesalius refuses anonymous callers
            auth = {"Authorization": f"Bearer {launcher.api_token()}"}
        yield f"{endpoint.http_url}/dicom-web", version, auth


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000, help="one-instance small studies")
    parser.add_argument("--small-rows", type=int, default=64, help="size of the small images")
    parser.add_argument(
        "--series-instances", type=int, default=500, help="images in the big series"
    )
    parser.add_argument("--rows", type=int, default=512, help="size of the big series' images")
    parser.add_argument("--batch", type=int, default=25, help="instances per STOW-RS request")
    parser.add_argument("--parallel", type=int, default=4, help="concurrent STOW-RS clients")
    parser.add_argument("--repeat", type=int, default=30, help="QIDO calls per query (median)")
    parser.add_argument("--meta-repeat", type=int, default=5, help="/metadata calls (median)")
    parser.add_argument("--retrieve-repeat", type=int, default=3, help="study retrieves (median)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (median; fresh servers)")
    parser.add_argument("--servers", default="vesalius,orthanc", help="which servers, in order")
    parser.add_argument("--database-url", help="Vesalius index (default: SQLite in a temp folder)")
    add_vesalius_options(parser)
    parser.add_argument("--vesalius-cmd", nargs="+", help="command that runs `vesalius serve`")
    parser.add_argument("--orthanc", type=Path, default=Path("/usr/sbin/Orthanc"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--workdir", type=Path, help="parent of the temp folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dcmtk = Dcmtk.locate()
        with tempfile.TemporaryDirectory(prefix="dicomweb-bench-", dir=args.workdir) as tmp:
            root = Path(tmp)
            print(
                f"generating {args.studies} small studies and "
                f"a {args.series_instances}-image series ..."
            )
            small = generate_data(
                root / "small",
                args.studies,
                prefix="QIDO",
                rows=args.small_rows,
                columns=args.small_rows,
                instances_per_series=1,
                series_per_study=1,
                studies_per_patient=2,
                parts=1,
            )
            big = generate_data(
                root / "big",
                args.series_instances,
                prefix="WADO",
                rows=args.rows,
                columns=args.rows,
                instances_per_series=args.series_instances,
                series_per_study=1,
                parts=1,
            )
            data = Data(small, big)
            from pydicom import dcmread

            data.big_series = str(  # type: ignore[attr-defined]
                dcmread(_files(big)[0], stop_before_pixels=True).SeriesInstanceUID
            )
            names = [s.strip() for s in args.servers.split(",") if s.strip()]
            rounds: list[dict[str, Results]] = []
            limits: dict[str, list[float]] = {key: [] for key in LIMIT_SIZES}
            senders: dict[str, list[float]] = {key: [] for key in LIMIT_SIZES}
            for number in range(args.rounds):
                order = names if number % 2 == 0 else names[::-1]
                this: dict[str, Results] = {}
                with null_server(root) as sink:
                    for key, dataset in (
                        ("stow_big_instances_per_s", big),
                        ("stow_small_instances_per_s", small),
                    ):
                        files = _files(dataset)
                        size = dataset.nbytes // max(1, len(files))
                        limits[key].append(fsync_limit(root / "limit", size))
                        senders[key].append(stow(sink, files, args.batch, args.parallel, {}))
                for name in order:
                    print(f"round {number + 1}/{args.rounds}, {name}:")
                    with _server(name, args, dcmtk, root) as (base, version, auth):
                        result = Results(name, version)
                        measure(name, base, data, args, result, auth)
                        this[name] = result
                rounds.append(this)
            summary = report(rounds, limits, senders)
            summary["data"] = {
                "small_studies": args.studies,
                "big_series_instances": args.series_instances,
                "big_study_mb": big.nbytes / 1e6,
                "rows": args.rows,
            }
            if args.json:
                args.json.write_text(json.dumps(summary, indent=2))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
