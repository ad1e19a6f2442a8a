#!/usr/bin/env python3
"""Transcoding and TLS benchmark: frames encoded on request, and DICOM TLS ingest.

* Transcoding (Vesalius and Orthanc + its DICOMweb plugin, side by side): ``--instances``
  512x512 CT images stored uncompressed (STOW-RS), then WADO-RS ``frames/1`` of each asked as
  JPEG-LS lossless (``Accept: multipart/related; type="image/jls"``): the latency of the first
  frame of an instance never asked before, the median of the same request repeated, and the
  throughput in frames/s with 1 and ``--parallel`` clients; the uncompressed frame
  (``application/octet-stream``) is measured the same way for reference. A server that cannot
  give JPEG-LS frames is reported as such with its HTTP status.
* TLS ingest (Vesalius): the same files sent with DCMTK's ``storescu`` over the plain port and
  over ``+tls`` (BCP 195, client certificate from a CA made for the run), alternately,
  ``--rounds`` times; instances/s and the TLS overhead.

Examples
--------
    .venv/bin/python benchmarks/conformance_bench.py
    .venv/bin/python benchmarks/conformance_bench.py --instances 50 --servers vesalius
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from _common import (
    BenchError,
    Dcmtk,
    Endpoint,
    VesaliusLauncher,
    default_vesalius_command,
    free_ports,
    generate_data,
)
from dicomweb_bench import _server, stow
from pydicom import dcmread

JLS = 'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.80'
NATIVE = 'multipart/related; type="application/octet-stream"'


def frame_url(base: str, ds: Any) -> str:
    return (
        f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1"
    )


def get_frame(client: httpx.Client, url: str, accept: str) -> tuple[int, int, str]:
    response = client.get(url, headers={"Accept": accept})
    return response.status_code, len(response.content), response.headers.get("content-type", "")


def measure_frames(
    base: str, auth: dict[str, str], datasets: list[Any], accept: str, repeat: int, parallel: int
) -> dict[str, Any]:
    urls = [frame_url(base, ds) for ds in datasets]
    with httpx.Client(headers=auth, timeout=120) as client:
        started = time.perf_counter()
        status, size, content_type = get_frame(client, urls[0], accept)
        first_ms = (time.perf_counter() - started) * 1000
        if status != 200:
            return {"status": status, "supported": False}
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            get_frame(client, urls[0], accept)
            samples.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        sizes = [get_frame(client, url, accept)[1] for url in urls[1:]]
        serial = (len(urls) - 1) / (time.perf_counter() - started)

    local = threading.local()
    clients: list[httpx.Client] = []

    def fetch(url: str) -> int:
        client = getattr(local, "client", None)
        if client is None:  # one keep-alive connection per worker, as a viewer has
            client = local.client = httpx.Client(headers=auth, timeout=120)
            clients.append(client)
        return get_frame(client, url, accept)[0]

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        statuses = list(pool.map(fetch, urls))
    concurrent = len(urls) / (time.perf_counter() - started)
    for client in clients:
        client.close()
    return {
        "status": status,
        "supported": True,
        "content_type": content_type.split(";")[0],
        "first_frame_ms": round(first_ms, 1),
        "repeat_median_ms": round(statistics.median(samples), 1),
        "frames_per_s": round(serial, 1),
        "frames_per_s_parallel": round(concurrent, 1),
        "bytes_per_frame": int(statistics.median([size, *sizes])),
        "errors": sum(1 for s in statuses if s != 200),
    }


# --------------------------------------------------------------------------------------------
# TLS


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server and a client certificate for the run (the ``cryptography`` package)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("bench CA"))
        .issuer_name(name("bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.crt"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("server", "client"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(f"bench {who}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .sign(ca_key, hashes.SHA256())
        )
        paths[f"{who}_crt"] = folder / f"{who}.crt"
        paths[f"{who}_key"] = folder / f"{who}.key"
        paths[f"{who}_crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{who}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    return paths


def tls_ingest(
    args: argparse.Namespace, dcmtk: Dcmtk, workdir: Path, folder: Path, count: int
) -> dict[str, Any]:
    pki = make_pki(workdir)
    [tls_port] = free_ports(1)
    launcher = VesaliusLauncher(
        args.vesalius_cmd or default_vesalius_command(),
        dcmtk,
        workdir,
        extra_env={
            "VESALIUS_DICOM_TLS_PORT": str(tls_port),
            "VESALIUS_DICOM_TLS_CERTIFICATE": str(pki["server_crt"]),
            "VESALIUS_DICOM_TLS_PRIVATE_KEY": str(pki["server_key"]),
            "VESALIUS_DICOM_TLS_CA_CERTIFICATES": str(pki["ca"]),
            "VESALIUS_DUPLICATE_POLICY": "replace",
        },
    )
    launcher.check()
    tls_options = ["+tls", str(pki["client_key"]), str(pki["client_crt"]), "+cf", str(pki["ca"])]
    rates: dict[str, list[float]] = {"plain": [], "tls": []}
    with launcher.run() as endpoint:
        assert isinstance(endpoint, Endpoint)
        for round_ in range(args.rounds):
            order = ("plain", "tls") if round_ % 2 == 0 else ("tls", "plain")
            for kind in order:
                port = endpoint.port if kind == "plain" else tls_port
                extra = tls_options if kind == "tls" else []
                cmd = [
                    dcmtk.tool("storescu"), "-aet", "BENCHSCU", "-aec", endpoint.aet, *extra,
                    "+sd", "+r", endpoint.host, str(port), str(folder),
                ]  # fmt: skip
                started = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, env=dcmtk.env)
                elapsed = time.perf_counter() - started
                if proc.returncode != 0:
                    raise BenchError(f"storescu ({kind}) failed: {proc.stderr[-800:]}")
                rates[kind].append(count / elapsed)
    plain, secure = statistics.median(rates["plain"]), statistics.median(rates["tls"])
    return {
        "instances": count,
        "rounds": args.rounds,
        "plain_per_s": round(plain, 1),
        "tls_per_s": round(secure, 1),
        "tls_overhead_percent": round((plain / secure - 1) * 100, 1),
        "samples": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
    }


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100, help="512x512 CT images")
    parser.add_argument("--repeat", type=int, default=10, help="repeats of the first frame")
    parser.add_argument("--parallel", type=int, default=4, help="concurrent frame clients")
    parser.add_argument("--rounds", type=int, default=3, help="TLS/plain ingest rounds")
    parser.add_argument("--servers", default="vesalius,orthanc", help="transcoding servers")
    parser.add_argument("--skip-tls", action="store_true", help="no TLS ingest measurement")
    parser.add_argument("--database-url", help="Vesalius index (default: SQLite in a temp folder)")
    parser.add_argument("--vesalius-cmd", nargs="+", help="command that runs `vesalius serve`")
    parser.add_argument("--orthanc", type=Path, default=Path("/usr/sbin/Orthanc"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--workdir", type=Path, help="parent of the temp folder")
    return parser.parse_args(argv)


def _print(results: dict[str, Any]) -> None:
    print()
    print("WADO-RS frames/1, 512x512 CT stored uncompressed")
    print(
        f"{'server':10} {'asked as':12} {'first ms':>9} {'repeat ms':>10} {'frames/s':>9} "
        f"{'par f/s':>8} {'bytes':>8}"
    )
    for server, by_kind in results["frames"].items():
        for kind, row in by_kind.items():
            if not row.get("supported"):
                print(f"{server:10} {kind:12} not supported (HTTP {row['status']})")
                continue
            print(
                f"{server:10} {kind:12} {row['first_frame_ms']:9.1f}"
                f" {row['repeat_median_ms']:10.1f}"
                f" {row['frames_per_s']:9.1f} {row['frames_per_s_parallel']:8.1f}"
                f" {row['bytes_per_frame']:8d}"
            )
    if "tls" in results:
        tls = results["tls"]
        print()
        print(
            f"C-STORE ingest, {tls['instances']} instances, storescu, median of {tls['rounds']}: "
            f"plain {tls['plain_per_s']}/s, TLS {tls['tls_per_s']}/s, "
            f"TLS costs {tls['tls_overhead_percent']}%"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        dcmtk = Dcmtk.locate()
        with tempfile.TemporaryDirectory(prefix="conformance-bench-", dir=args.workdir) as tmp:
            root = Path(tmp)
            data = generate_data(
                root / "data",
                args.instances,
                prefix="JLS",
                instances_per_series=args.instances,
                series_per_study=1,
                parts=1,
            )
            files = sorted(p for p in data.root.rglob("*.dcm"))
            datasets = [dcmread(p, stop_before_pixels=True) for p in files]
            results: dict[str, Any] = {"instances": len(files), "frames": {}}
            for server in [s.strip() for s in args.servers.split(",") if s.strip()]:
                with contextlib.ExitStack() as stack:
                    base, version, auth = stack.enter_context(_server(server, args, dcmtk, root))
                    stow(base, files, 10, 4, auth)
                    results["frames"][server] = {
                        "jpeg-ls": measure_frames(
                            base, auth, datasets, JLS, args.repeat, args.parallel
                        ),
                        "native": measure_frames(
                            base, auth, datasets, NATIVE, args.repeat, args.parallel
                        ),
                    }
                    results.setdefault("versions", {})[server] = version
            if not args.skip_tls:
                results["tls"] = tls_ingest(args, dcmtk, root, data.root, len(files))
        _print(results)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
