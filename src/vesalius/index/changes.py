"""The change feed of the imaging index: numbered changes, written with the rows they describe.

Every function of :mod:`vesalius.index.imaging` that adds, replaces or deletes instances calls
:func:`record` in its own transaction, so whichever path writes the index (a single store, a
group commit, a delete, a rebuild) leaves the feed in step with the index.

Numbers come from a one-row counter updated in the writing transaction: they have no gaps (a
rolled-back transaction gives its numbers back) and commit in order (the counter's row lock is
held until commit), so a reader that has seen N has seen every change up to N. The lock is
taken at the end of the write, so it is held only for the commit itself.

Kinds
-----
``study_created``, ``instance_stored``, ``instance_replaced``, ``instance_deleted``,
``study_deleted``, ``patient_deleted``, ``study_stable``, and ``index_reset`` (written by a
rebuild before it indexes every file again: a reader forgets what it knew and applies the
``instance_stored`` changes that follow).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from vesalius.index.models import ChangeCounter, ChangeLog
from vesalius.index.prepared import Prepared


class ChangeKind(StrEnum):
    STUDY_CREATED = "study_created"
    INSTANCE_STORED = "instance_stored"
    INSTANCE_REPLACED = "instance_replaced"
    INSTANCE_DELETED = "instance_deleted"
    STUDY_DELETED = "study_deleted"
    PATIENT_DELETED = "patient_deleted"
    STUDY_STABLE = "study_stable"
    INDEX_RESET = "index_reset"


@dataclass(frozen=True)
class Change:
    """One change to the imaging index."""

    seq: int
    created_at: dt.datetime
    kind: str
    patient_id: str | None
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None


@dataclass(frozen=True)
class NewChange:
    """A change about to be recorded (its number is given when it is written)."""

    kind: ChangeKind
    patient_id: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None


def utcnow() -> dt.datetime:
    """The time stored in the index: UTC, without a zone (every database keeps it alike)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _cut(value: str | None) -> str | None:
    return value[:64] if value else None


# Built once: every store runs them.
_BUMP = (
    update(ChangeCounter)
    .where(ChangeCounter.id == 1)
    .values(last_seq=ChangeCounter.last_seq + bindparam("b_n"))
)
_BUMP_RETURNING = _BUMP.returning(ChangeCounter.last_seq)
_LAST = select(ChangeCounter.last_seq).where(ChangeCounter.id == 1)
_INSERT = insert(ChangeLog)
_COLUMNS = ("seq", "created_at", "kind", "patient_id", "study_uid", "series_uid", "sop_uid")
_BUMP_FAST = Prepared(_BUMP)
_BUMP_RETURNING_FAST = Prepared(_BUMP_RETURNING)
_LAST_FAST = Prepared(_LAST)
_INSERT_FAST = Prepared(_INSERT, _COLUMNS)


def record(session: Session, changes: Sequence[NewChange]) -> int:
    """Write *changes* in the current transaction; returns the last number given."""
    if not changes:
        return latest_seq(session)
    conn = session.connection()
    if conn.dialect.update_returning:
        cursor = _BUMP_RETURNING_FAST.run(conn, {"b_n": len(changes)})
    else:
        _BUMP_FAST.run(conn, {"b_n": len(changes)}).close()
        cursor = _LAST_FAST.run(conn)
    (last,) = cursor.fetchone()
    cursor.close()
    first = last - len(changes) + 1
    now = utcnow()
    rows = [
        {
            "seq": first + number,
            "created_at": now,
            "kind": change.kind.value,
            "patient_id": _cut(change.patient_id),
            "study_uid": _cut(change.study_uid),
            "series_uid": _cut(change.series_uid),
            "sop_uid": _cut(change.sop_uid),
        }
        for number, change in enumerate(changes)
    ]
    for row in rows:
        _INSERT_FAST.run(conn, row).close()
    return int(last)


def changes_since(session: Session, since: int, limit: int) -> list[Change]:
    """The changes numbered after *since*, oldest first, at most *limit* of them."""
    rows = session.execute(
        select(
            ChangeLog.seq,
            ChangeLog.created_at,
            ChangeLog.kind,
            ChangeLog.patient_id,
            ChangeLog.study_uid,
            ChangeLog.series_uid,
            ChangeLog.sop_uid,
        )
        .where(ChangeLog.seq > since)
        .order_by(ChangeLog.seq)
        .limit(limit)
    )
    return [Change(*row) for row in rows]


def latest_seq(session: Session) -> int:
    """The number of the newest change (0 when there is none)."""
    value = session.execute(select(ChangeCounter.last_seq).where(ChangeCounter.id == 1)).scalar()
    return int(value or 0)


def latest(session: Session) -> Change | None:
    """The newest change, or None."""
    found = changes_since(session, latest_seq(session) - 1, 1)
    return found[0] if found else None
