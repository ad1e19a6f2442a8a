"""Write transactions, on every database; on the embedded index they share one held
connection and session (``HeldWriter``), which must behave as a fresh session each time."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from vesalius.container import Container
from vesalius.index.records_models import Subject


def subjects(container: Container) -> list[str]:
    with container.db.read() as session:
        return list(session.scalars(select(Subject.subject_id).order_by(Subject.subject_id)))


def test_a_write_commits_what_it_added_and_a_failed_one_leaves_nothing(
    container: Container,
) -> None:
    db = container.db
    with db.write() as session:
        session.add(Subject(subject_id="A1", extra="{}"))  # flushed at the end of the block
        session.info["note"] = "set by this transaction"
    with pytest.raises(RuntimeError), db.write() as session:
        assert "note" not in session.info  # each transaction starts with its own info
        session.add(Subject(subject_id="B1", extra="{}"))
        session.flush()
        raise RuntimeError("the caller's failure")
    with db.write() as session:  # the connection goes on after the rollback
        assert session.scalar(select(func.count()).select_from(Subject)) == 1
        session.add(Subject(subject_id="C1", extra="{}"))
    assert subjects(container) == ["A1", "C1"]


def test_a_savepoint_rolls_back_alone_and_loaded_objects_outlive_the_block(
    container: Container,
) -> None:
    with container.db.write() as session:
        session.add(Subject(subject_id="S1", extra="{}"))
        with pytest.raises(ValueError), session.begin_nested():
            session.add(Subject(subject_id="S2", extra="{}"))
            session.flush()
            raise ValueError("this part only")
        subject = session.scalars(select(Subject).where(Subject.subject_id == "S1")).one()
    assert subject.subject_id == "S1"  # detached, its attributes kept (expire_on_commit off)
    assert subjects(container) == ["S1"]


def test_writers_of_several_threads_take_turns_and_all_commit(container: Container) -> None:
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            for step in range(10):
                with container.db.write() as session:
                    session.add(Subject(subject_id=f"T{number}-{step}", extra="{}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(subjects(container)) == 40


def test_a_held_connection_lost_is_replaced(sqlite_container: Container) -> None:
    db = sqlite_container.db
    with db.write() as session:
        session.add(Subject(subject_id="L1", extra="{}"))
    held = db._held
    assert held is not None and held._conn is not None
    held._conn.invalidate()  # as after a disconnect: the next transaction needs a new one
    with db.write() as session:
        session.add(Subject(subject_id="L2", extra="{}"))
    assert subjects(sqlite_container) == ["L1", "L2"]
    db.dispose()
    assert held._conn is None
