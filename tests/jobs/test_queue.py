"""The durable job queue on every database: each job runs once, retries back off, failures end
dead with their error, priorities, dedupe keys, periodic jobs, and two ``vesalius serve``
processes on PostgreSQL sharing one queue."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vesalius import jobs
from vesalius.container import Container
from vesalius.index import jobs as sql
from vesalius.index.changes import utcnow
from vesalius.jobs import registry
from vesalius.jobs.runner import JobRunner, backoff_s

HERE = Path(__file__).parent


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def states(container: Container, kind: str | None = None) -> dict[str, int]:
    with container.db.read() as session:
        return sql.count_by_state(session, kind)


def job_row(container: Container, job_id: int) -> sql.JobRow:
    with container.db.read() as session:
        row = sql.get(session, job_id)
    assert row is not None
    return row


@pytest.fixture
def kinds() -> Iterator[list[str]]:
    """Job kinds registered by a test, forgotten afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        registry._kinds.pop(name, None)
        registry._schedules.pop(name, None)


def runner(container: Container, **kw: Any) -> JobRunner:
    kw.setdefault("poll_s", 0.05)
    kw.setdefault("retry_base_s", 0.05)
    return JobRunner(container, **kw).start()


def test_jobs_run_once_in_priority_order_and_dedupe(container: Container, kinds: list[str]) -> None:
    ran: list[Any] = []
    lock = threading.Lock()

    @jobs.job("t.order")
    def order(payload: dict[str, Any]) -> None:
        with lock:
            ran.append(payload["n"])

    kinds.append("t.order")
    past = utcnow() - dt.timedelta(seconds=5)
    for n, priority in ((1, 0), (2, 5), (3, 0), (4, 9)):
        jobs.enqueue(container.db, "t.order", {"n": n}, priority=priority, run_at=past)
    assert jobs.enqueue(container.db, "t.order", {"n": 5}, dedupe_key="k") is not None
    assert jobs.enqueue(container.db, "t.order", {"n": 6}, dedupe_key="k") is None
    later = jobs.enqueue(container.db, "t.order", {"n": 7}, run_at=utcnow() + dt.timedelta(hours=1))
    worker = runner(container, workers=1)
    try:
        wait_for(lambda: len(ran) == 5)
        time.sleep(0.3)
    finally:
        worker.stop()
    assert ran == [4, 2, 1, 3, 5]
    assert states(container, "t.order") == {"done": 5, "queued": 1}
    assert job_row(container, later).state == "queued"
    # A finished job gives its dedupe key back.
    assert jobs.enqueue(container.db, "t.order", {"n": 8}, dedupe_key="k") is not None


def test_a_failing_job_backs_off_then_succeeds_or_ends_dead(
    container: Container, kinds: list[str]
) -> None:
    calls: Counter[str] = Counter()

    @jobs.job("t.flaky", max_attempts=4)
    def flaky(payload: dict[str, Any], context: jobs.JobContext) -> None:
        calls[payload["name"]] += 1
        assert context.attempt == calls[payload["name"]]
        if calls[payload["name"]] <= payload["failures"]:
            raise ConnectionRefusedError(f"peer refused (attempt {context.attempt})")

    kinds.append("t.flaky")
    ok = jobs.enqueue(container.db, "t.flaky", {"name": "ok", "failures": 2})
    bad = jobs.enqueue(container.db, "t.flaky", {"name": "bad", "failures": 99})
    assert ok is not None and bad is not None
    worker = runner(container)
    try:
        wait_for(lambda: states(container, "t.flaky") == {"done": 1, "dead": 1})
    finally:
        worker.stop()
    assert calls == {"ok": 3, "bad": 4}
    dead = job_row(container, bad)
    assert dead.attempts == 4 and "peer refused (attempt 4)" in (dead.last_error or "")
    assert job_row(container, ok).last_error is None
    # Retried by hand: queued again with fresh attempts; cancelled: never runs.
    with container.db.write() as session:
        assert sql.retry(session, bad)
        assert not sql.retry(session, ok)  # done jobs are not retried
        assert sql.cancel(session, bad)
        assert not sql.cancel(session, bad)
    assert job_row(container, bad).state == "cancelled"


def test_backoff_doubles_and_is_capped() -> None:
    assert 8 <= backoff_s(1, 10) <= 12
    assert 32 <= backoff_s(3, 10) <= 48
    assert backoff_s(30, 10) <= 3600 * 1.2


def test_two_runners_share_the_queue_and_each_job_runs_once(
    container: Container, kinds: list[str]
) -> None:
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()

    def work(payload: dict[str, Any], context: jobs.JobContext) -> None:
        time.sleep(0.002)
        with lock:
            seen.append((context.job_id, threading.current_thread().name))

    jobs.register("t.shared", work)
    kinds.append("t.shared")
    ids = [jobs.enqueue(container.db, "t.shared", {"n": n}) for n in range(150)]
    first, second = runner(container, workers=3), runner(container, workers=3)
    try:
        wait_for(lambda: states(container, "t.shared").get("done") == 150, timeout=120)
    finally:
        first.stop()
        second.stop()
    assert sorted(job_id for job_id, _ in seen) == sorted(ids)


def test_an_expired_lease_is_taken_again(container: Container, kinds: list[str]) -> None:
    jobs.register("t.lease", lambda payload: None, lease_s=2)
    kinds.append("t.lease")
    job_id = jobs.enqueue(container.db, "t.lease", {})
    # A runner that died holding the job: claimed, never finished.
    with container.db.write() as session:
        [taken] = sql.claim(session, "dead-node/1", ["t.lease"], 1, {"t.lease": 2.0})
    assert taken.id == job_id and taken.state == "running"
    with container.db.write() as session:
        assert sql.claim(session, "other/1", ["t.lease"], 1, {"t.lease": 2.0}) == []
    time.sleep(3.1)  # MariaDB keeps whole seconds
    worker = runner(container)
    try:
        wait_for(lambda: job_row(container, job_id).state == "done")
    finally:
        worker.stop()
    assert job_row(container, job_id).attempts == 2
    with container.db.write() as session:  # the dead node's late answer changes nothing
        assert not sql.finish(session, job_id, "dead-node/1")


def test_a_periodic_job_runs_on_one_runner_per_period(
    container: Container, kinds: list[str]
) -> None:
    runs: list[float] = []
    began = utcnow()  # the schedule's grid starts at or after this (a second before on MariaDB)
    jobs.register("t.tick", lambda payload: runs.append(time.monotonic()))
    jobs.schedule("t.tick", every_s=1.0, payload={})
    kinds.append("t.tick")
    first, second = runner(container), runner(container)
    try:
        time.sleep(3.6)
    finally:
        first.stop()
        second.stop()
    assert 3 <= len(runs) <= 5, runs
    # One job per period of the schedule's grid, however late each is taken on a loaded
    # machine: the n-th job's period starts at least n - 1 periods after the grid's start, and
    # a job is queued only once its period has started. So n jobs need n - 1 periods between
    # `began` and the last one's queueing; a period taken by both runners is one job too many.
    # (A late job and the next, on time, may be queued a moment apart: their gap says nothing.)
    from sqlalchemy import select

    from vesalius.index.jobs_models import Job

    with container.db.read() as session:
        queued = sorted(
            session.execute(select(Job.created_at).where(Job.kind == "t.tick")).scalars()
        )
    assert len(runs) <= len(queued) <= len(runs) + 1, (queued, runs)  # the last may wait
    # MariaDB keeps whole seconds: the grid may start, and the last job seem queued, up to a
    # second earlier than they were.
    slack = 2.0 if container.db.engine.dialect.name in ("mysql", "mariadb") else 0.0
    periods = (queued[-1] - began).total_seconds() + slack
    assert len(queued) <= int(periods) + 1, (began, queued)


def test_hostile_enqueues_are_refused(sqlite_container: Container) -> None:
    with pytest.raises(TypeError):
        jobs.enqueue(sqlite_container.db, "t.x", {"bad": object()})
    with pytest.raises(ValueError):
        jobs.enqueue(sqlite_container.db, "t.x", {}, dedupe_key="k" * 500)
    with pytest.raises(ValueError):
        jobs.register("", lambda payload: None)
    with pytest.raises(ValueError):
        jobs.schedule("t.x", every_s=0)
    assert states(sqlite_container) == {}


def test_a_job_of_an_unknown_kind_waits_for_a_node_that_knows_it(
    sqlite_container: Container,
) -> None:
    job_id = jobs.enqueue(sqlite_container.db, "t.nobody-knows", {})
    worker = runner(sqlite_container)
    try:
        time.sleep(0.3)
    finally:
        worker.stop()
    assert job_row(sqlite_container, job_id).state == "queued"


def _serve(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vesalius", "serve"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_line(process: subprocess.Popen[str], pattern: str, timeout: float = 60) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError("".join(lines))


def test_two_serve_processes_on_postgresql_run_each_job_once(
    tmp_path: Path, server_databases: Any, make_settings: Any
) -> None:
    from vesalius.container import build

    url = server_databases.create("postgresql")
    container = build(make_settings(database_url=url), migrate=True)
    out = tmp_path / "ran.txt"
    pythonpath = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    processes = []
    try:
        for n in range(2):
            env = {
                "VESALIUS_DATA_DIR": str(tmp_path / f"node{n}"),
                "VESALIUS_DATABASE_URL": url,
                "VESALIUS_DICOM_PORT": "0",
                "VESALIUS_DICOM_HOST": "127.0.0.1",
                "VESALIUS_HTTP_ENABLED": "false",
                "VESALIUS_PLUGINS": '["jobs_test_plugin"]',
                "VESALIUS_JOB_WORKERS": "3",
                "VESALIUS_JOB_POLL_S": "0.05",
                "VESALIUS_ADMIN_PASSWORD": "Test-password-0042",
                "PYTHONPATH": pythonpath,
            }
            processes.append(_serve(env))
        for process in processes:
            _wait_line(process, r"job runner .* started")
        ids = [
            jobs.enqueue(container.db, "test.record", {"path": str(out), "sleep": 0.01})
            for _ in range(300)
        ]
        wait_for(lambda: states(container, "test.record").get("done") == 300, timeout=120)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.communicate(timeout=60)
        container.close()
    lines = [line.split() for line in out.read_text().splitlines()]
    assert sorted(int(job_id) for job_id, _ in lines) == sorted(ids)
    assert len({pid for _, pid in lines}) == 2  # both nodes took work
    assert all(p.returncode == 0 for p in processes)
