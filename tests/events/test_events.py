"""Typed events after commit, isolated handlers, instance filters and study hooks."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from dicomgen import make_dataset, make_file, to_bytes, uid
from vesalius.archive.service import Incoming, Reject, Replace
from vesalius.config import DuplicatePolicy
from vesalius.container import Container
from vesalius.errors import InstanceRejected, NotFound
from vesalius.events import (
    Event,
    InstancesDeleted,
    InstanceStored,
    StudyCreated,
)
from vesalius.index import changes
from vesalius.index import jobs as jobs_sql
from vesalius.index import records as records_sql
from vesalius.index.models import Instance
from vesalius.jobs.runner import JobRunner


def instances(container: Container) -> int:
    with container.db.read() as session:
        return int(session.execute(select(func.count()).select_from(Instance)).scalar_one())


def test_events_arrive_after_the_commit_in_order(container: Container) -> None:
    container.settings.duplicate_policy = DuplicatePolicy.REPLACE
    seen: list[tuple[Event, int]] = []

    def handler(event: Event) -> None:
        # A new session sees the instance: the event came after the commit.
        seen.append((event, instances(container)))

    container.events.subscribe(Event, handler)
    study = uid()
    first = make_dataset(StudyInstanceUID=study, PatientID="EV1", Modality="MR")
    container.archive.store(to_bytes(first), origin="SCANNER1")
    # Handled before the test goes on: the events thread could otherwise reach it only after
    # the delete below, and count no instance for a reason that is not the event's timing.
    assert container.events.drain()
    container.archive.store(make_file(StudyInstanceUID=study, PatientID="EV1"), origin="SCANNER1")
    container.archive.store(to_bytes(first))  # identical: nothing happened, no event
    first.StudyDescription = "changed"
    container.archive.store(to_bytes(first), origin="fix")  # replaced
    container.archive.delete(study)
    assert container.events.drain()
    kinds = [type(e).__name__ for e, _ in seen]
    assert kinds == [
        "StudyCreated",
        "InstanceStored",
        "InstanceStored",
        "InstanceStored",
        "InstancesDeleted",
    ]
    created, stored = seen[0][0], seen[1][0]
    assert isinstance(created, StudyCreated) and created.origin == "SCANNER1"
    assert isinstance(stored, InstanceStored)
    assert stored.new_study and stored.modality == "MR" and stored.patient_id == "EV1"
    assert stored.size > 0 and stored.sop_instance_uid == str(first.SOPInstanceUID)
    assert seen[1][1] >= 1  # visible when the handler ran
    replaced = seen[3][0]
    assert isinstance(replaced, InstanceStored) and replaced.replaced
    deleted = seen[4][0]
    assert isinstance(deleted, InstancesDeleted) and deleted.count == 2
    with pytest.raises(AttributeError):
        stored.origin = "x"  # type: ignore[misc]  # frozen


def test_a_failing_or_slow_handler_never_fails_or_holds_the_store(
    sqlite_container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    bus = sqlite_container.events
    release = threading.Event()
    got: list[str] = []

    def broken(event: InstanceStored) -> None:
        raise ValueError("plugin bug")

    def stuck(event: InstanceStored) -> None:
        release.wait(30)
        got.append(event.sop_instance_uid)

    bus.subscribe(InstanceStored, broken, "broken")
    bus.subscribe(InstanceStored, stuck, "stuck")
    with caplog.at_level(logging.ERROR, logger="vesalius.events"):
        outcomes = [sqlite_container.archive.store(make_file()) for _ in range(3)]
        assert not got  # the stores returned while the handler was still stuck
        release.set()
        assert bus.drain()
    assert got == [o.sop_instance_uid for o in outcomes]
    assert bus.failures == 3
    assert "event handler broken failed on InstanceStored" in caplog.text


def test_filters_accept_refuse_or_replace_before_anything_is_written(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    def no_us(incoming: Incoming) -> Any:
        if incoming.get("Modality") == "US":
            return Reject("ultrasound is not archived here")
        return None

    def stamp(incoming: Incoming) -> Any:
        if incoming.get("InstitutionName"):
            return None
        ds = dcmread(__import__("io").BytesIO(incoming.read()))
        ds.InstitutionName = f"via {incoming.origin}"
        return Replace(to_bytes(ds))

    def broken(incoming: Incoming) -> Any:
        raise RuntimeError("filter bug")

    container.archive.add_filter("no-us", no_us)
    container.archive.add_filter("broken", broken)
    container.archive.add_filter("stamp", stamp)
    with pytest.raises(InstanceRejected, match="refused by no-us: ultrasound is not archived"):
        container.archive.store(make_file(Modality="US"), origin="ECHO1")
    assert instances(container) == 0
    assert [k for k in container.blobs.iter_keys() if k.startswith("dicom/")] == []
    with container.db.read() as session:
        assert changes.latest_seq(session) == 0
    with caplog.at_level(logging.ERROR):
        outcome = container.archive.store(make_file(Modality="CT"), origin="CT1")
    assert "instance filter broken failed" in caplog.text
    [record] = container.archive.instances_of(outcome.study_instance_uid)
    with container.archive.open(record) as fh:
        assert dcmread(fh).InstitutionName == "via CT1"


def test_a_broken_study_hook_is_isolated_and_replayed_as_a_job(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    state = {"broken": True, "ran": []}

    def hook(session: Any, study: Any) -> None:
        if state["broken"]:
            # It writes a row before it fails: the row must go with it.
            records_sql.get_or_create_subject(session, "HALFWAY", {"extra": "{}"})
            raise RuntimeError("derived record bug")
        state["ran"].append(study.study_instance_uid)

    container.archive.add_study_hook("test.derived", hook)
    reruns = container.archive.rows.reruns
    with caplog.at_level(logging.ERROR):
        outcome = container.archive.store(make_file(PatientID="HOOK1"))
    assert "study hook test.derived failed" in caplog.text
    assert instances(container) == 1
    # The first pass runs the hooks without savepoints; the failure made it run again with them.
    assert container.archive.rows.reruns == reruns + 1
    # The records' own hook ran and committed with the instance all the same.
    assert container.records.get_subject("HOOK1").subject_id == "HOOK1"
    with pytest.raises(NotFound):
        container.records.get_subject("HALFWAY")
    with container.db.read() as session:
        [job] = jobs_sql.list_jobs(session, kind="archive.study_hook")
    assert job.state == "queued" and "derived record bug" in job.payload
    state["broken"] = False
    runner = JobRunner(container, poll_s=0.05, retry_base_s=0.05).start()
    try:
        for _ in range(600):
            with container.db.read() as session:
                if jobs_sql.get(session, job.id).state == "done":  # type: ignore[union-attr]
                    break
            threading.Event().wait(0.05)
    finally:
        runner.stop()
    assert state["ran"] == [outcome.study_instance_uid]


def test_subject_changes_and_accesses_are_events_too(sqlite_container: Container) -> None:
    from vesalius.auth.audit import AuditRecord
    from vesalius.events import Accessed, SubjectChanged
    from vesalius.records.schemas import SubjectIn, SubjectPatch

    seen: list[Event] = []
    sqlite_container.events.subscribe(SubjectChanged, seen.append)
    sqlite_container.events.subscribe(Accessed, seen.append)
    sqlite_container.records.create_subject(SubjectIn(subject_id="S0001"))
    sqlite_container.records.update_subject("S0001", SubjectPatch(description="pilot"))
    sqlite_container.records.delete_subject("S0001")
    sqlite_container.audit.record(AuditRecord("dr.who", "view", "http", "/patients/P1"))
    assert sqlite_container.events.drain()
    assert [(type(e).__name__, getattr(e, "action", None)) for e in seen] == [
        ("SubjectChanged", "created"),
        ("SubjectChanged", "updated"),
        ("SubjectChanged", "deleted"),
        ("Accessed", "view"),
    ]
    accessed = seen[-1]
    assert isinstance(accessed, Accessed) and accessed.actor == "dr.who"


def test_the_audit_trail_is_a_shipped_plugin_that_misses_no_access(
    sqlite_container: Container,
) -> None:
    """The trail is written by the `audit` plugin from `Accessed` events, inline: a queued
    handler stuck behind a full queue (events dropped for it) loses the trail nothing, and a
    failing inline handler of another plugin neither."""
    from vesalius.auth.audit import AuditRecord
    from vesalius.events import Accessed
    from vesalius.index.people import AuditFilters

    container = sqlite_container
    assert "audit" in [p.name for p in container.plugins]
    release = threading.Event()
    container.events._queue.maxsize = 2  # a tiny queue, so that the stuck handler drops events
    container.events.subscribe(Accessed, lambda event: release.wait(30), name="stuck")

    def broken(event: Accessed) -> None:
        raise RuntimeError("a broken inline handler")

    container.events.subscribe(Accessed, broken, name="broken", inline=True)
    try:
        for number in range(40):
            container.audit.record(AuditRecord("dr.who", "view", "http", f"/patients/P{number}"))
        assert container.events.dropped > 0  # the queued handler missed events...
    finally:
        release.set()
    trail = container.audit.search(AuditFilters(actor="dr.who", limit=100))
    assert sorted(row["object"] for row in trail) == sorted(f"/patients/P{n}" for n in range(40))
    assert container.events.failures >= 40  # ...and the broken one failed alone each time
