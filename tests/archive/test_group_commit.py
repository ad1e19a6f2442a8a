"""Group commit: instances ready together are committed together, and a bad one fails alone."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite

from dicomgen import make_dataset, uid
from vesalius.errors import SeriesConflict


def encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("with_conflict", [True, False])
def test_ready_instances_share_one_commit_and_a_conflict_fails_alone(
    container: Any, with_conflict: bool
) -> None:
    """Ten stores queued behind a held writer commit in one batch. A conflicting instance
    among them fails alone: the batch is run again with savepoints (only then)."""
    archive = container.archive
    rows = archive.rows
    # A series archived under one study; the conflicting instance names it under another.
    first = make_dataset()
    archive.store(encoded(first))
    conflicting = make_dataset(SeriesInstanceUID=first.SeriesInstanceUID)
    assert conflicting.StudyInstanceUID != first.StudyInstanceUID
    study = uid()
    good = [make_dataset(StudyInstanceUID=study, PatientID="GC") for _ in range(9)]

    # Hold the writer inside a transaction so that the next stores queue up behind it.
    entered, gate = threading.Event(), threading.Event()

    def hold(_session: Any) -> None:
        entered.set()
        gate.wait(30)

    holder = threading.Thread(target=rows.run, args=(hold,))
    holder.start()
    assert entered.wait(10)
    batches_before, reruns_before = rows.batches, rows.reruns
    results: dict[str, Any] = {}

    def store(ds: Dataset) -> None:
        try:
            results[str(ds.SOPInstanceUID)] = archive.store(encoded(ds)).status
        except Exception as exc:  # checked below
            results[str(ds.SOPInstanceUID)] = exc

    sent = [*good, conflicting] if with_conflict else good
    senders = [threading.Thread(target=store, args=(ds,)) for ds in sent]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 30
    while rows.pending() < len(senders) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rows.pending() == len(senders), "the stores did not all reach the writer"
    gate.set()
    holder.join(30)
    for sender in senders:
        sender.join(30)

    assert rows.batches - batches_before == 2  # the held one, then all the others together
    assert rows.reruns - reruns_before == (1 if with_conflict else 0)
    if with_conflict:
        assert isinstance(results[str(conflicting.SOPInstanceUID)], SeriesConflict)
    assert [results[str(ds.SOPInstanceUID)] for ds in good] == ["stored"] * 9
    totals = archive.totals()
    assert (totals.studies, totals.instances) == (2, 10)
    assert list(archive.iter_orphans()) == []  # the refused instance left no file


@pytest.mark.parametrize("count", [1, 5])
def test_a_lone_instance_is_not_kept_waiting(sqlite_container: Any, count: int) -> None:
    archive = sqlite_container.archive
    before = archive.rows.batches
    for _ in range(count):
        archive.store(encoded(make_dataset()))
    assert archive.rows.batches - before == count  # one commit each, nobody waits for a batch


def test_many_callers_through_small_batches_each_get_their_own_outcome(
    sqlite_container: Any,
) -> None:
    """40 callers at once, 3 steps to a commit: callers whose step did not fit in a batch
    lead a later one, nobody hangs, each gets its own result or its own error."""
    from sqlalchemy import text

    from vesalius.archive.group_commit import GroupCommit

    rows = GroupCommit(sqlite_container.archive.db, max_batch=3)
    results: dict[int, Any] = {}

    def step(number: int) -> Any:
        def write(session: Any) -> int:
            time.sleep(0.002)  # long enough for the others to queue up
            if number % 7 == 0:
                raise ValueError(f"step {number} fails")
            return int(session.execute(text("select :v"), {"v": number}).scalar())

        return write

    def call(number: int) -> None:
        try:
            results[number] = rows.run(step(number))
        except ValueError as exc:
            results[number] = str(exc)

    callers = [threading.Thread(target=call, args=(n,)) for n in range(40)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert not any(caller.is_alive() for caller in callers)
    assert results == {n: f"step {n} fails" if n % 7 == 0 else n for n in range(40)}
    assert rows.pending() == 0
    assert rows.batches >= 40 // 3  # never more than max_batch steps in one commit


@pytest.mark.parametrize("with_conflict", [True, False])
def test_stores_on_one_loop_share_the_commit_of_its_turn_and_a_conflict_fails_alone(
    container: Any, with_conflict: bool
) -> None:
    """Stores run on one event loop with a CommitBatch (the STOW-RS parts of small
    instances) commit their rows together: one transaction for all that reached their
    commit in one turn of the loop. A conflicting one fails alone and leaves no file."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from vesalius.archive.inline import CommitBatch, await_steps
    from vesalius.archive.parse import write_spool

    archive = container.archive
    rows = archive.rows
    first = make_dataset()
    archive.store(encoded(first))
    conflicting = make_dataset(SeriesInstanceUID=first.SeriesInstanceUID)
    good = [make_dataset(StudyInstanceUID=uid(), PatientID="LOOP") for _ in range(6)]
    sent = [*good, conflicting] if with_conflict else good
    pool = ThreadPoolExecutor(max_workers=4)

    async def offload(function: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, function)

    async def store_all() -> list[Any]:
        commits = CommitBatch()

        async def one(ds: Dataset) -> Any:
            spool = archive.blobs.spool()
            write_spool(spool, encoded(ds))
            try:
                outcome = await await_steps(archive.store_steps(spool, "test"), offload, commits)
            except Exception as exc:  # checked below
                return exc
            return outcome.status

        return list(await asyncio.gather(*(one(ds) for ds in sent)))

    batches_before, steps_before, reruns_before = rows.batches, rows.steps, rows.reruns
    try:
        results = asyncio.run(store_all())
    finally:
        pool.shutdown()
    reruns = rows.reruns - reruns_before  # 1: the conflict shared its batch, which ran again
    if archive.db.log is not None:  # the embedded index: rows commit while files flush
        assert rows.batches - batches_before == 1
        assert reruns == (1 if with_conflict else 0)
    else:  # each commits once its file is flushed: those flushed in one turn, together, so
        # the conflict may have been alone in its batch (no rerun)
        assert 1 <= rows.batches - batches_before <= len(sent)
        assert reruns in ((0, 1) if with_conflict else (0,))
    failed_alone = 1 if with_conflict and not reruns else 0  # a batch of one that failed
    assert rows.steps - steps_before == len(sent) - failed_alone
    assert results[: len(good)] == ["stored"] * len(good)
    if with_conflict:
        assert isinstance(results[-1], SeriesConflict)
    totals = archive.totals()
    assert (totals.studies, totals.instances) == (1 + len(good), 1 + len(good))
    assert list(archive.iter_orphans()) == []
    assert archive.blobs.stale_temporaries() == []
