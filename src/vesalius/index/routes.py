"""The forwarding routes' state: how far each has read the change feed (``route_watermarks``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vesalius.index import changes
from vesalius.index.jobs_models import RouteWatermark
from vesalius.index.models import Instance


def ensure_watermarks(session: Session, names: Sequence[str]) -> None:
    """Give each new route a watermark at the newest change: a route forwards what arrives
    from the moment it is configured, not the archive's history."""
    known = set(session.execute(select(RouteWatermark.route)).scalars())
    missing = [n for n in names if n not in known]
    if not missing:
        return
    start = changes.latest_seq(session)
    now = changes.utcnow()
    for name in missing:
        try:
            with session.begin_nested():
                session.execute(
                    insert(RouteWatermark).values(route=name, last_seq=start, updated_at=now)
                )
        except IntegrityError:
            pass  # another node created it


def lock_watermarks(session: Session, names: Sequence[str]) -> dict[str, int]:
    """The watermarks of *names*, locked until this transaction ends (one catch-up at a time)."""
    ensure_watermarks(session, names)
    rows = session.execute(
        select(RouteWatermark.route, RouteWatermark.last_seq)
        .where(RouteWatermark.route.in_(list(names)))
        .with_for_update()
    )
    return {name: int(seq) for name, seq in rows}


def move_watermarks(session: Session, names: Sequence[str], seq: int) -> None:
    session.execute(
        update(RouteWatermark)
        .where(RouteWatermark.route.in_(list(names)), RouteWatermark.last_seq < seq)
        .values(last_seq=seq, updated_at=changes.utcnow())
    )


def instance_data(session: Session, sop_uids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """SOP Instance UID -> (DICOM JSON text, origin) of the indexed ones among *sop_uids*."""
    found: dict[str, tuple[str, str | None]] = {}
    unique = list(dict.fromkeys(sop_uids))
    for start in range(0, len(unique), 500):
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.metadata_json, Instance.origin).where(
                Instance.sop_instance_uid.in_(unique[start : start + 500])
            )
        )
        for uid, text, origin in rows:
            found[uid] = (text, origin)
    return found
