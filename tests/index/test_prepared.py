"""Prepared statements on the driver's cursor: inserts that may meet a taken key, and rows read
back with the values SQLAlchemy's result would give, on every database."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from vesalius.container import Container
from vesalius.index.prepared import Prepared, insert_row
from vesalius.index.records_models import Subject

_SUBJECT = Prepared(
    select(Subject.subject_id, Subject.birth_date, Subject.created_at).where(
        Subject.id == bindparam("pk")
    )
)


def test_a_conflicting_insert_fails_alone_and_the_transaction_goes_on(
    container: Container,
) -> None:
    table = Subject.__table__
    with container.db.write() as session:
        conn = session.connection()
        first = insert_row(conn, table, {"subject_id": "S1", "extra": "{}"}, may_conflict=True)
        with pytest.raises(IntegrityError):
            insert_row(conn, table, {"subject_id": "S1", "extra": "{}"}, may_conflict=True)
        values = {"subject_id": "S2", "extra": "{}", "birth_date": dt.date(1970, 5, 6)}
        second = insert_row(conn, table, values)
    assert second != first
    with container.db.read() as session:
        assert _SUBJECT.first(session.connection(), {"pk": first})[0] == "S1"
        subject_id, birth_date, created_at = _SUBJECT.first(session.connection(), {"pk": second})
        assert _SUBJECT.first(session.connection(), {"pk": second + 100}) is None
    assert (subject_id, birth_date) == ("S2", dt.date(1970, 5, 6))
    assert isinstance(created_at, dt.datetime)
