"""STOW-RS streams each part to a spool: limits answer 413, and nothing is left behind."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from dicomgen import make_dataset, make_file, to_bytes, uid
from dicomgen_raw import with_vr

from .conftest import RunningWeb
from .test_stow import CONTENT_TYPE, body, seq


def leftovers(web: RunningWeb) -> list[str]:
    blobs = web.container.blobs
    return [p.name for p in blobs.temp_dir.iterdir()] + list(web.archive.iter_orphans())  # type: ignore[attr-defined]


def test_a_part_over_the_limit_is_413_and_leaves_nothing(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    small, large = make_file(), make_file(rows=128, columns=128)
    web.container.settings.stow_max_part_bytes = len(large) - 1
    response = httpx.post(
        f"{web.dicomweb}/studies", content=body(large), headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status_code == 413
    assert "stow_max_part_bytes" in response.json()["detail"]
    assert web.archive.totals().instances == 0
    # streamed in pieces after a part that fits: that one is stored, and the answer says so
    payload = body(small, large)
    pieces = (payload[i : i + 4096] for i in range(0, len(payload), 4096))
    response = httpx.post(
        f"{web.dicomweb}/studies", content=pieces, headers={"Content-Type": CONTENT_TYPE}
    )
    assert response.status_code == 413
    assert "the 1 instance(s) before it were stored" in response.json()["detail"]
    assert web.archive.totals().instances == 1
    assert leftovers(web) == []


def test_a_request_over_the_limit_is_413(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    payload = body(make_file(seed=1), make_file(seed=2))
    web.container.settings.stow_max_request_bytes = len(payload) - 10
    declared = httpx.post(
        f"{web.dicomweb}/studies", content=payload, headers={"Content-Type": CONTENT_TYPE}
    )
    assert declared.status_code == 413
    assert "stow_max_request_bytes" in declared.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    streamed = httpx.post(
        f"{web.dicomweb}/studies", content=chunked(), headers={"Content-Type": CONTENT_TYPE}
    )
    assert streamed.status_code == 413
    assert "stow_max_request_bytes" in streamed.json()["detail"]
    assert web.archive.totals().instances <= 1  # the first part may have fitted
    assert leftovers(web) == []
    assert httpx.get(f"{web.dicomweb}/studies").status_code == 200


def test_a_client_that_goes_away_mid_part_leaves_no_spool(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    payload = body(make_file(), make_file(rows=256, columns=256))
    host, port = httpx.URL(web.dicomweb).host, httpx.URL(web.dicomweb).port
    path = httpx.URL(web.dicomweb).path + "/studies"
    for cut in (len(payload) // 2, len(payload) - 10):
        with socket.create_connection((host, port)) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
            )
            sock.sendall(payload[:cut])
            time.sleep(0.3)  # the server is inside the second part
    deadline = time.monotonic() + 10
    while leftovers(web) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(web) == []
    assert httpx.get(f"{web.dicomweb}/studies").status_code == 200


def test_store_rules_over_stow(sqlite_web: RunningWeb) -> None:
    web = sqlite_web
    series, study_x, study_y = uid(), uid(), uid()
    first = to_bytes(make_dataset(StudyInstanceUID=study_x, SeriesInstanceUID=series))
    intruder = make_dataset(StudyInstanceUID=study_y, SeriesInstanceUID=series)
    unknown_vr = with_vr(make_file(), 0x0020000D, b"UI", b"ZZ")
    wrong_vr = with_vr(make_file(), 0x0020000E, b"UI", b"PN")
    stored = httpx.post(
        f"{web.dicomweb}/studies", content=body(first), headers={"Content-Type": CONTENT_TYPE}
    )
    assert stored.status_code == 200
    response = httpx.post(  # parts are stored concurrently: the series' first one went before
        f"{web.dicomweb}/studies",
        content=body(to_bytes(intruder), unknown_vr, wrong_vr),
        headers={"Content-Type": CONTENT_TYPE},
    )
    assert response.status_code == 409
    failed = seq(response.json(), "00081198")
    assert [f["00081197"]["Value"][0] for f in failed] == [0xA900, 0xC000, 0xC000]
    conflict = failed[0]["00741048"]["Value"][0]
    assert study_x in conflict and study_y in conflict and series in conflict
    assert failed[0]["00081155"]["Value"] == [intruder.SOPInstanceUID]
    assert "is encoded with VR ZZ" in failed[1]["00741048"]["Value"][0]
    assert "is encoded with VR PN; it must be UI" in failed[2]["00741048"]["Value"][0]
    assert web.archive.totals().instances == 1
    # nothing answers under the refused instance's study
    found = httpx.get(f"{web.dicomweb}/studies", params={"StudyInstanceUID": study_y})
    assert found.status_code == 204 or found.json() == []
    assert leftovers(web) == []


def test_parts_stored_at_once_small_ones_more_than_large_ones(
    sqlite_web: RunningWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to IN_FLIGHT parts of a request are stored at once, LARGE_IN_FLIGHT large ones:
    counted from a part's file put in place to the end of its flush to the disk (slowed
    here), which every store waits for."""
    from vesalius.storage.filesystem import FilesystemBlobStore, PlacedFile
    from vesalius.web.dicomweb.stow import IN_FLIGHT, LARGE_IN_FLIGHT, LARGE_MIN

    web = sqlite_web
    lock = threading.Lock()
    busy = {"now": 0, "most": 0}
    place, sync = FilesystemBlobStore.place_spool, PlacedFile.sync

    def counted_place(store: FilesystemBlobStore, *args: object) -> PlacedFile:
        placed = place(store, *args)  # type: ignore[arg-type]
        with lock:
            busy["now"] += 1
            busy["most"] = max(busy["most"], busy["now"])
        return placed

    def slow_sync(placed: PlacedFile) -> object:
        time.sleep(0.1)
        try:
            return sync(placed)
        finally:
            with lock:
                busy["now"] -= 1

    monkeypatch.setattr(FilesystemBlobStore, "place_spool", counted_place)
    monkeypatch.setattr(PlacedFile, "sync", slow_sync)

    def post(parts: list[bytes]) -> int:
        busy["most"] = 0
        response = httpx.post(
            f"{web.dicomweb}/studies", content=body(*parts),
            headers={"Content-Type": CONTENT_TYPE}, timeout=60,
        )  # fmt: skip
        assert response.status_code == 200
        return busy["most"]

    small = [make_file() for _ in range(IN_FLIGHT + 4)]
    assert LARGE_IN_FLIGHT < post(small) <= IN_FLIGHT
    large = [make_file(rows=400, columns=400) for _ in range(LARGE_IN_FLIGHT + 3)]
    assert all(len(part) >= LARGE_MIN for part in large)
    assert 1 < post(large) <= LARGE_IN_FLIGHT
    assert web.archive.totals().instances == len(small) + len(large)
