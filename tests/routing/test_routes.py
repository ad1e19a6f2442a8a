"""Forwarding rules: a route that matches and one that does not, to a real DCMTK storescp;
a peer down then up (the job retries and the instance arrives once); a study forwarded once
it is stable; settings that name unknown peers or malformed rules are refused in words."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dicomgen import make_file, uid
from ports import free_port
from vesalius.config import Settings
from vesalius.container import Container, build
from vesalius.index import changes
from vesalius.index import jobs as jobs_sql
from vesalius.jobs.runner import JobRunner

STORESCP = "/usr/bin/storescp"
pytestmark = pytest.mark.skipif(not Path(STORESCP).exists(), reason="DCMTK is not installed")


@contextmanager
def storescp(port: int, folder: Path) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [STORESCP, "-aet", "STORESCP", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield folder
    finally:
        process.terminate()
        process.wait(10)


def wait_for(
    condition: Callable[[], bool],
    timeout: float = 60.0,
    state: Callable[[], object] | None = None,
) -> None:
    """Wait for *condition*; on time-out, say what *state* shows (to diagnose a rare miss)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; {state() if state else ''}")
        time.sleep(0.05)


def forward_jobs(container: Container) -> list[jobs_sql.JobRow]:
    with container.db.read() as session:
        return jobs_sql.list_jobs(session, kind="route.forward")


def received(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


@contextmanager
def archive(make_settings: Any, database_url: str, port: int, **extra: Any) -> Iterator[Any]:
    settings = make_settings(
        database_url=database_url,
        remote_ae=[{"name": "scp", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port}],
        **extra,
    )
    container = build(settings, migrate=True)
    runner = JobRunner(container, poll_s=0.05, retry_base_s=0.3).start()
    try:
        yield container
    finally:
        runner.stop()
        container.close()


def test_a_matching_route_forwards_and_another_does_not(
    make_settings: Any, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    routes = [
        {"name": "ct", "match": {"Modality": "CT", "CallingAE": "SCANNER*"}, "to": "scp"},
        {"name": "mr-elsewhere", "match": {"Modality": "MR", "CallingAE": "OTHER"}, "to": "scp"},
    ]
    with (
        storescp(port, tmp_path / "in") as folder,
        archive(make_settings, database_url, port, route=routes) as container,
    ):
        ct = container.archive.store(make_file(Modality="CT"), origin="SCANNER1")
        container.archive.store(make_file(Modality="MR"), origin="SCANNER1")
        container.archive.store(make_file(Modality="CT"), origin="WORKSTATION")
        assert container.events.drain()
        wait_for(lambda: [j.state for j in forward_jobs(container)] == ["done"])
        [job] = forward_jobs(container)
        assert ct.sop_instance_uid in job.payload and '"route":"ct"' in job.payload
        wait_for(lambda: len(received(folder)) == 1)
        assert ct.sop_instance_uid in received(folder)[0].name


def test_a_peer_down_then_up_gets_the_instance_once(
    make_settings: Any, sqlite_container: Container, tmp_path: Path
) -> None:
    port = free_port()
    routes = [{"name": "all", "to": "scp"}]
    with archive(make_settings, f"sqlite:///{tmp_path / 'i.sqlite'}", port, route=routes) as c:
        stored = c.archive.store(make_file(Modality="CT"), origin="SCANNER1")
        assert c.events.drain()
        # The forward job is made from the change feed by route.catchup, shortly after.
        wait_for(lambda: any(j.last_error for j in forward_jobs(c)))
        [job] = forward_jobs(c)
        assert "could not be reached" in (job.last_error or "")
        assert job.state in ("queued", "running")
        with storescp(port, tmp_path / "late") as folder:
            wait_for(lambda: forward_jobs(c)[0].state == "done")
            time.sleep(0.5)
            files = received(folder)
        assert len(files) == 1 and stored.sop_instance_uid in files[0].name
        assert forward_jobs(c)[0].attempts >= 2


def test_a_stable_study_is_forwarded_whole_once(
    make_settings: Any, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    routes = [{"name": "studies", "match": {"Modality": "CT"}, "to": "scp", "on": "stable"}]
    study = uid()
    with (
        storescp(port, tmp_path / "in") as folder,
        archive(make_settings, database_url, port, route=routes, stable_after_s=1) as container,
    ):
        for _ in range(3):
            container.archive.store(make_file(Modality="CT", StudyInstanceUID=study))
        container.archive.store(make_file(Modality="MR"))  # stable too, but not routed
        wait_for(lambda: [j.state for j in forward_jobs(container)] == ["done"])
        wait_for(lambda: len(received(folder)) == 3)

        def stable_count() -> int:
            with container.db.read() as session:
                kinds = [c.kind for c in changes.changes_since(session, 0, 1000)]
            return kinds.count("study_stable")

        def state() -> str:
            with container.db.read() as session:
                feed = [(c.seq, c.kind, c.study_uid) for c in changes.changes_since(session, 0, 99)]
                queue = [
                    (j.kind, j.state, j.attempts, j.last_error) for j in jobs_sql.list_jobs(session)
                ]
            return f"changes {feed}; jobs {queue}"

        # The MR study may become due a sweep after the CT one: wait for it, then check that
        # neither is declared again once more than stable_after_s has passed.
        wait_for(lambda: stable_count() == 2, state=state)
        time.sleep(1.5)
        assert stable_count() == 2


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"name": "r", "to": "nowhere"}, "sends to 'nowhere', which is neither a remote_ae"),
        ({"name": "r", "to": "scp", "match": {"StudyDate": "2020-13-45"}}, "match StudyDate"),
        ({"name": "r", "to": "scp", "match": {"Modalityy": "CT"}}, "'Modalityy' is not a DICOM"),
        ({"name": "r", "to": "scp", "on": "sometimes"}, "on"),
    ],
)
def test_bad_routes_are_refused_in_words(route: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(
            remote_ae=[{"name": "scp", "ae_title": "STORESCP", "host": "127.0.0.1", "port": 104}],
            route=[route],
        )


def test_stores_whose_forward_was_never_queued_are_forwarded_once_after_a_restart(
    make_settings: Any, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash window between a store's commit and its forward: the rows and the change
    feed are there, no job is. The next start reads the feed past the route's watermark."""
    from vesalius import routing
    from vesalius.index.jobs_models import RouteWatermark

    port = free_port()
    routes = [{"name": "ct", "match": {"Modality": "CT"}, "to": "scp"}]
    settings = make_settings(
        database_url=database_url,
        remote_ae=[{"name": "scp", "ae_title": "STORESCP", "host": "127.0.0.1", "port": port}],
        route=routes,
    )
    with monkeypatch.context() as patch:
        patch.setattr(routing._Catcher, "start", lambda self: None)  # "crashes" before it reads
        first = build(settings, migrate=True)  # the route gets its watermark here
        lost = [first.archive.store(make_file(Modality=m)) for m in ("CT", "CT", "MR")]
        assert first.events.drain()
    with first.db.read() as session:
        assert jobs_sql.list_jobs(session) == []
    first.close()

    with storescp(port, tmp_path / "in") as folder:
        second = build(settings)
        runner = JobRunner(second, poll_s=0.05, retry_base_s=0.3).start()
        try:
            wait_for(lambda: len(received(folder)) == 2)
            later = second.archive.store(make_file(Modality="CT"))
            wait_for(lambda: len(received(folder)) == 3)
            wait_for(lambda: {j.state for j in forward_jobs(second)} == {"done"})
            # Several catch-ups later (every 5 s and after each store), still once each.
            time.sleep(6)
            assert second.events.drain()
            names = sorted(p.name for p in received(folder))
            sent = [lost[0].sop_instance_uid, lost[1].sop_instance_uid, later.sop_instance_uid]
            assert len(names) == 3
            assert all(any(s in n for n in names) for s in sent)
            queued = [json.loads(j.payload)["instances"] for j in forward_jobs(second)]
            assert sorted(sop for batch in queued for _, sop in batch) == sorted(sent)
            with second.db.read() as session:
                mark = session.get(RouteWatermark, "ct")
                assert mark is not None and mark.last_seq == changes.latest_seq(session)
        finally:
            runner.stop()
            second.close()
