"""Federation benchmarks: a site's initial push to a central index, and the central search.

1. Initial push: a site's index is filled with N studies (one patient each) straight with SQL,
   then ``Indexer.push_initial`` sends them to a central index running as a real ``vesalius
   serve`` process on the loopback (its own data folder, SQLite unless --central-database-url)
   with the default batch size. Reports the time and the rate.
2. Central search at that size: ``GET /api/federation/studies`` over HTTP with an API token,
   a mix of patient-name (person-name matching, wildcards), patient-ID, date-range, modality
   and site searches, each a page of 50 with its total. Reports p50/p95/max.
3. Store-to-found delay (with --delay): a site ``vesalius serve`` with the indexer settings;
   one study is stored with ``vesalius import`` and the central index is polled until it finds
   it. Needs the push job inside ``serve``.

Usage: python benchmarks/federation_bench.py [--studies 100000] [--rounds 15]
       [--central-database-url URL] [--delay]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from worklist_bench import populate

from vesalius.config import Settings
from vesalius.container import build
from vesalius.federation.indexer import Indexer

PASSWORD = "Timing-password-0042"
SEARCHES = [
    {"patient_name": "muller^jose*"},
    {"patient_name": "MUL*"},
    {"patient_name": "*nunez*"},
    {"patient_name": "smith^anna"},
    {"patient_id": "P00012*"},
    {"patient_id": "P0099999"},
    {"from": "2015-01-01", "to": "2015-03-31"},
    {"modality": "PT"},
    {"modality": "MR", "from": "2020-01-01"},
    {"site": "H1", "patient_name": "garcia*"},
    {"patient_name": "nobody^here"},
    {},
]


def start_serve(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "vesalius", "serve"],
        env={
            **os.environ,
            "VESALIUS_DATA_DIR": str(data_dir),
            "VESALIUS_DICOM_HOST": "127.0.0.1",
            "VESALIUS_DICOM_PORT": "0",
            "VESALIUS_HTTP_PORT": "0",
            "VESALIUS_ADMIN_PASSWORD": PASSWORD,
            "VESALIUS_LOG_LEVEL": "INFO",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := re.search(r"http_port=(\d+)", line):
            threading.Thread(target=_drain, args=(process,), daemon=True).start()
            return process, int(match.group(1))
    process.kill()
    raise SystemExit("the central index did not start:\n" + "".join(lines))


def _drain(process: subprocess.Popen[str]) -> None:
    """Keep reading a server's log so that its pipe never fills."""
    assert process.stdout is not None
    for _line in process.stdout:
        pass


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _label(search: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in search.items()) or "(no filter)"


def _p95(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)]


def bench_search(url: str, token: str, rounds: int) -> dict[str, Any]:
    """Every search *rounds* times (after one warm-up round); overall and per search p50/p95."""
    times: list[float] = []
    kinds: dict[str, list[float]] = {_label(s): [] for s in SEARCHES}
    totals: dict[str, int] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        for search in SEARCHES:
            answer = client.get("/api/federation/studies", params=search)
            answer.raise_for_status()
            totals[_label(search)] = answer.json()["total"]
        for _ in range(rounds):
            for search in SEARCHES:
                start = time.perf_counter()
                response = client.get("/api/federation/studies", params=search)
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                times.append(elapsed)
                kinds[_label(search)].append(elapsed)
    return {
        "requests": len(times),
        "p50_ms": statistics.median(times) * 1000,
        "p95_ms": _p95(times) * 1000,
        "max_ms": max(times) * 1000,
        "kinds": {
            label: (totals[label], statistics.median(ts) * 1000, _p95(ts) * 1000)
            for label, ts in kinds.items()
        },
    }


def bench_delay(tmp: Path, central_url: str, key: str, token: str, runs: int) -> list[float]:
    """Seconds from `vesalius import` returning at a site to the central index finding it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from dicomgen import make_dataset, write

    env = {
        "VESALIUS_INDEXER_URL": f"{central_url}/api/federation/studies",
        "VESALIUS_INDEXER_KEY": key,
        "VESALIUS_SITE_CODE": "H2",
    }
    site_dir = tmp / "site2"
    process, _port = start_serve(site_dir, env)
    delays = []
    try:
        for run in range(runs):
            ds = make_dataset(PatientID=f"DELAY{run}", PatientName="DELAY^TEST")
            folder = write(tmp / f"delay{run}", ds).parent
            subprocess.run(
                [sys.executable, "-m", "vesalius", "import", str(folder)],
                env={**os.environ, "VESALIUS_DATA_DIR": str(site_dir), **env},
                check=True,
                capture_output=True,
            )
            stored = time.perf_counter()
            while True:
                answer = httpx.get(
                    f"{central_url}/api/federation/studies",
                    params={"study_iuid": ds.StudyInstanceUID},
                    headers={"Authorization": f"Bearer {token}"},
                )
                if answer.json()["total"]:
                    delays.append(time.perf_counter() - stored)
                    break
                if time.perf_counter() - stored > 600:
                    raise SystemExit("the study never reached the central index")
                time.sleep(0.05)
    finally:
        stop(process)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--central-database-url", default=None)
    parser.add_argument("--delay", action="store_true", help="also time store-to-found")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        central_settings = Settings(
            data_dir=tmp / "central", database_url=args.central_database_url, central_index=True
        )
        central = build(central_settings, migrate=True)
        key = central.central.add_site("H1")
        key2 = central.central.add_site("H2")
        central.auth.create_user("bench", PASSWORD, "radiologist")
        token, _ = central.auth.create_token("bench", "benchmark")
        central.close()
        env = {"VESALIUS_CENTRAL_INDEX": "true"}
        if args.central_database_url:
            env["VESALIUS_DATABASE_URL"] = args.central_database_url
        process, port = start_serve(tmp / "central", env)
        url = f"http://127.0.0.1:{port}"
        try:
            site_settings = Settings(
                data_dir=tmp / "site",
                indexer_url=f"{url}/api/federation/studies",
                indexer_key=key,
                site_code="H1",
            )
            site = build(site_settings, migrate=True)
            try:
                started = time.perf_counter()
                populate(site, args.studies)
                print(
                    f"site: {args.studies} studies inserted in "
                    f"{time.perf_counter() - started:.1f} s"
                )
                indexer = Indexer(site_settings, site.db)
                result = indexer.push_initial()
                indexer.close()
                print(
                    f"initial push of {result.records} studies in {result.batches} batches of "
                    f"{site_settings.indexer_batch_size}: {result.seconds:.1f} s "
                    f"({result.records / result.seconds:.0f} studies/s), central on "
                    f"{'SQLite' if not args.central_database_url else 'PostgreSQL'}"
                )
            finally:
                site.close()
            search = bench_search(url, token, args.rounds)
            print(
                f"central search at {args.studies} studies, page of 50 with its total, "
                f"{search['requests']} requests: p50 {search['p50_ms']:.1f} ms, "
                f"p95 {search['p95_ms']:.1f} ms, max {search['max_ms']:.1f} ms"
            )
            print(f"  {'search':<40} {'total':>7} {'p50 ms':>8} {'p95 ms':>8}")
            for label, (total, p50, p95) in search["kinds"].items():
                print(f"  {label:<40} {total:>7} {p50:>8.1f} {p95:>8.1f}")
            if args.delay:
                delays = bench_delay(tmp, url, key2, token, runs=5)
                print(
                    "store-to-found at the central index: "
                    + ", ".join(f"{d:.2f} s" for d in delays)
                    + f" (median {statistics.median(delays):.2f} s)"
                )
        finally:
            stop(process)


if __name__ == "__main__":
    main()
