"""Portal benchmarks: the worklist at 100,000 patients, and the first image in the viewer.

1. Worklist: 100,000 patients (and one study each) are inserted straight into the index with
   SQL, then ``GET /api/worklist`` is timed over HTTP (a real server on the loopback, an API
   token) for a mix of searches: name parts, accents, ID prefixes, a modality and date filter,
   both sort orders. Reports p50/p95/max of a page of 50.
2. First image: a 300-image CT series (512x512, 16 bit) is stored; headless Chromium (Debian's
   ``/usr/bin/chromium``, a profile on disk) opens the study with a logged-in session. On the
   portal's study page (``/studies/<uid>``) the page's own clock gives the moment the first
   image is on the screen (the server's rendering, then the Cornerstone3D stack viewer on the
   same image) and the moment the stack viewer drew it. OHIF has no such clock: its canvas is
   screenshot until it is not blank. The first run is cold, the others use the browser cache.

Usage: python benchmarks/worklist_bench.py [--patients 100000] [--database-url URL] [--skip-viewer]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import insert

from vesalius.auth.accounts import Client
from vesalius.config import Settings
from vesalius.container import Container, build
from vesalius.dicom.matching import fold_text
from vesalius.index.models import Patient, Study
from vesalius.web.app import create_app
from vesalius.web.viewer import DIST, viewer_url

LAST = [
    "Müller",
    "García",
    "Núñez",
    "Smith",
    "Dubois",
    "Łukasz",
    "Ødegård",
    "Rossi",
    "Nakamura",
    "O'Brien",
    "Van der Berg",
    "Kowalski",
    "Johansson",
    "Papadopoulos",
    "Silva",
    "Nguyen",
    "Schmidt",
    "Martin",
    "Bernard",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
]
FIRST = [
    "José",
    "Anna",
    "François",
    "Jürgen",
    "Zoë",
    "Mohammed",
    "Li",
    "Olga",
    "Søren",
    "Maria",
    "Peter",
    "Chloé",
    "Ana",
    "Ivan",
    "Hélène",
    "Ahmed",
    "Yuki",
    "Lucas",
    "Emma",
    "Noah",
]
MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "CT\\PT", "MR\\US"]
PASSWORD = "Timing-password-0042"


def populate(container: Container, count: int) -> None:
    """Insert *count* patients with one study each, in batches, straight into the index."""
    rng = random.Random(7)
    batch = 5000
    for start in range(0, count, batch):
        patients, studies = [], []
        for n in range(start, min(count, start + batch)):
            name = f"{rng.choice(LAST)}^{rng.choice(FIRST)}{'' if n % 3 else '^' + str(n % 97)}"
            date = f"{rng.randint(2000, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            patients.append(
                {
                    "id": n + 1,
                    "patient_id": f"P{n:07d}",
                    "patient_name": name,
                    "patient_name_folded": fold_text(name),
                    "patient_birth_date": "19700101",
                    "patient_sex": rng.choice("MF"),
                    "num_studies": 1,
                    "num_series": 1,
                    "num_instances": 1,
                    "last_study_date": date,
                    "attributes": "{}",
                }
            )
            studies.append(
                {
                    "patient_pk": n + 1,
                    "study_instance_uid": f"2.25.{n + 1}",
                    "study_date": date,
                    "modalities_in_study": rng.choice(MODALITIES),
                    "num_series": 1,
                    "num_instances": 1,
                    "attributes": "{}",
                }
            )
        with container.db.write() as session:
            session.execute(insert(Patient), patients)
            session.execute(insert(Study), studies)
    if container.db.is_sqlite:
        with container.db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def serve(container: Container) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(container),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


SEARCHES = [
    {"q": "mul"},
    {"q": "muller jose"},
    {"q": "NUNEZ"},
    {"q": "zoe"},
    {"q": "odegard soren"},
    {"q": "P00012"},
    {"q": "P0099"},
    {"q": "an"},
    {"q": "xyz-nobody"},
    {"q": "garcia", "sort": "name"},
    {"q": "smith", "modality": "CT", "from": "2015-01-01", "to": "2020-12-31"},
    {"q": "becker", "page": "3"},
    {"q": "wagner emma"},
    {"q": "chloe", "sort": "name"},
]


def bench_worklist(url: str, token: str, rounds: int) -> dict[str, float]:
    times: list[float] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        for search in SEARCHES:  # warm up
            client.get("/api/worklist", params=search).raise_for_status()
        for _ in range(rounds):
            for search in SEARCHES:
                start = time.perf_counter()
                response = client.get("/api/worklist", params=search)
                times.append(time.perf_counter() - start)
                response.raise_for_status()
    times.sort()
    return {
        "requests": len(times),
        "p50_ms": statistics.median(times) * 1000,
        "p95_ms": times[int(len(times) * 0.95) - 1] * 1000,
        "max_ms": times[-1] * 1000,
    }


def ct_series(container: Container, count: int = 300, size: int = 512) -> str:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    y, x = np.mgrid[:size, :size]
    r2 = (x - size / 2) ** 2 + (y - size / 2) ** 2
    for i in range(count):
        radius = size * (0.15 + 0.3 * i / (count - 1))
        pixels = np.where(r2 < radius**2, 1000 + (x * 3 + y) % 600, 24).astype(np.uint16)
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = (
            "BENCH^CT",
            "BENCHCT",
            "20240101",
            "CT",
        )
        ds.StudyDescription, ds.SeriesDescription = "Bench", "Axial 300"
        ds.InstanceNumber, ds.SeriesNumber = i + 1, 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
        ds.PixelData = pixels.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        container.archive.store(buffer.getvalue())
    return str(study)


def _browser(p: Any, profile: str, url: str, cookie: str) -> Any:
    """Chromium with a profile on disk, as a user's: its HTTP cache keeps the viewers' scripts
    (an incognito context's memory cache does not keep entries of a few MB)."""
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    context = p.chromium.launch_persistent_context(
        profile,
        executable_path="/usr/bin/chromium",
        args=args,
        viewport={"width": 1400, "height": 900},
    )
    context.add_cookies([{"name": "vesalius_session", "value": cookie, "url": url}])
    return context


def _spread(png: bytes) -> int:
    from PIL import Image

    low, high = Image.open(io.BytesIO(png)).convert("L").getextrema()
    return int(high - low)


def bench_study_page(
    url: str, container: Container, study: str, runs: int
) -> list[tuple[int, int]]:
    """The study page's own clock (ms since navigation): the first image on the screen (the
    server's rendering, drawn), and the Cornerstone3D viewer's first drawing."""
    from playwright.sync_api import sync_playwright

    cookie, _ = container.auth.login("bench", PASSWORD, Client("127.0.0.1"))
    results = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = _browser(p, profile, url, cookie)
        for _ in range(runs):
            page = context.new_page()
            page.goto(f"{url}/studies/{study}", wait_until="commit")
            page.wait_for_selector(
                "#stack-viewer[data-first-image]", state="attached", timeout=120_000
            )
            data = page.evaluate("({...document.getElementById('stack-viewer').dataset})")
            if _spread(page.locator("#stack-viewport canvas").first.screenshot()) <= 50:
                raise RuntimeError("the stack viewer drew a blank image")
            results.append((int(data["firstPaint"]), int(data["firstImage"])))
            page.close()
        context.close()
    return results


def bench_first_image(
    url: str, container: Container, path: str, canvas_selector: str, runs: int
) -> list[float]:
    """Seconds from navigation to a non-blank *canvas_selector* (screenshots polled: OHIF)."""
    from playwright.sync_api import sync_playwright

    cookie, _ = container.auth.login("bench", PASSWORD, Client("127.0.0.1"))
    results: list[float] = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = _browser(p, profile, url, cookie)
        for _ in range(runs):
            page = context.new_page()
            start = time.perf_counter()
            page.goto(url + path, wait_until="commit")
            canvas = page.wait_for_selector(canvas_selector, timeout=120_000)
            while _spread(canvas.screenshot()) <= 50:
                if time.perf_counter() - start > 120:
                    raise RuntimeError("the viewer painted nothing in 120 s")
            results.append(time.perf_counter() - start)
            page.close()
        context.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--skip-viewer", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=args.database_url)
        container = build(settings, migrate=True)
        try:
            started = time.perf_counter()
            populate(container, args.patients)
            print(
                f"inserted {args.patients} patients in {time.perf_counter() - started:.1f} s "
                f"({container.db.engine.dialect.name})"
            )
            container.auth.create_user("bench", PASSWORD, "radiologist")
            token, _ = container.auth.create_token("bench", "benchmark")
            for url in serve(container):
                result = bench_worklist(url, token, args.rounds)
                print(
                    f"worklist page of 50 with a search term, {result['requests']} requests: "
                    f"p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, "
                    f"max {result['max_ms']:.1f} ms"
                )
                if args.skip_viewer:
                    continue
                started = time.perf_counter()
                study = ct_series(container)
                print(f"stored a 300-image CT series in {time.perf_counter() - started:.1f} s")
                runs = bench_study_page(url, container, study, runs=5)
                print(
                    "study page, first image on the screen: "
                    + ", ".join(f"{first} ms" for first, _ in runs)
                    + "; the Cornerstone3D viewer drawn: "
                    + ", ".join(f"{drawn} ms" for _, drawn in runs)
                    + " (the page's clock from navigation; first run cold, then warm cache)"
                )
                if not (DIST / "index.html").exists():
                    print("OHIF skipped (no viewer files: scripts/fetch-viewer)")
                    continue
                times = bench_first_image(
                    url, container, viewer_url(study), ".cornerstone-canvas", 4
                )
                print(
                    "OHIF, first image painted: "
                    + ", ".join(f"{t * 1000:.0f} ms" for t in times)
                    + " (screenshots polled from navigation; first run cold, then warm cache)"
                )
        finally:
            container.close()


if __name__ == "__main__":
    main()
