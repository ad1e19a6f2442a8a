"""Index questions about people: accounts, sessions, tokens, failed logins, audit events.

Every SQL statement of the auth and audit services lives here; the services speak in domain
terms (a user, a session) and never see a query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, true, update
from sqlalchemy.orm import Session

from vesalius.index.models import Patient, Study
from vesalius.index.people_models import ApiToken, AuditEvent, LoginFailure, LoginSession, User
from vesalius.index.prepared import Prepared


@dataclass(frozen=True)
class UserRecord:
    id: int
    username: str
    full_name: str | None
    role: str
    active: bool
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True)
class SessionRecord:
    id: int
    user: UserRecord
    csrf_token: str
    expires_at: datetime
    remember: bool


@dataclass(frozen=True)
class TokenRecord:
    id: int
    user_pk: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _user(row: User) -> UserRecord:
    return UserRecord(
        row.id, row.username, row.full_name, row.role, row.active, row.created_at, row.last_login_at
    )


def _token(row: ApiToken) -> TokenRecord:
    return TokenRecord(
        row.id, row.user_pk, row.name, row.prefix, row.created_at, row.last_used_at, row.revoked_at
    )


# -- users -------------------------------------------------------------------------------------


def add_user(
    session: Session,
    username: str,
    role: str,
    password_hash: str,
    full_name: str | None,
    now: datetime,
) -> UserRecord:
    row = User(
        username=username,
        role=role,
        password_hash=password_hash,
        full_name=full_name,
        active=True,
        created_at=now,
        password_changed_at=now,
    )
    session.add(row)
    session.flush()
    return _user(row)


def get_user(session: Session, username: str) -> UserRecord | None:
    row = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    return _user(row) if row else None


def password_hash_of(session: Session, username: str) -> tuple[UserRecord, str] | None:
    row = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    return (_user(row), row.password_hash) if row else None


def list_users(session: Session) -> list[UserRecord]:
    return [_user(r) for r in session.execute(select(User).order_by(User.username)).scalars()]


def count_users(session: Session) -> int:
    return session.execute(select(func.count()).select_from(User)).scalar_one()


def active_admins(session: Session, admin_role: str) -> list[str]:
    """The user names of the active administrators, their rows locked until the transaction
    ends (on PostgreSQL and MariaDB), so two concurrent demotions cannot both pass a check."""
    query = (
        select(User.username)
        .where(User.role == admin_role, User.active.is_(True))
        .order_by(User.id)
        .with_for_update()
    )
    return list(session.execute(query).scalars())


def update_user(session: Session, username: str, **values: Any) -> bool:
    result = session.execute(update(User).where(User.username == username).values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def user_pk(session: Session, username: str) -> int | None:
    return session.execute(select(User.id).where(User.username == username)).scalar()


# -- sessions ----------------------------------------------------------------------------------


def add_session(session: Session, **values: Any) -> None:
    session.add(LoginSession(**values))


def session_by_hash(session: Session, token_hash: str, now: datetime) -> SessionRecord | None:
    row = session.execute(
        select(LoginSession, User)
        .join(User, LoginSession.user_pk == User.id)
        .where(
            LoginSession.token_hash == token_hash,
            LoginSession.expires_at > now,
            User.active.is_(True),
        )
    ).first()
    if row is None:
        return None
    login, user = row
    return SessionRecord(login.id, _user(user), login.csrf_token, login.expires_at, login.remember)


def delete_session(session: Session, token_hash: str) -> None:
    session.execute(delete(LoginSession).where(LoginSession.token_hash == token_hash))


def delete_sessions_of(session: Session, user: int) -> None:
    session.execute(delete(LoginSession).where(LoginSession.user_pk == user))


def delete_expired_sessions(session: Session, now: datetime) -> int:
    result = session.execute(delete(LoginSession).where(LoginSession.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def count_active_sessions(session: Session, now: datetime) -> int:
    return session.execute(
        select(func.count()).select_from(LoginSession).where(LoginSession.expires_at > now)
    ).scalar_one()


# -- API tokens --------------------------------------------------------------------------------


def add_token(session: Session, **values: Any) -> TokenRecord:
    row = ApiToken(**values)
    session.add(row)
    session.flush()
    return _token(row)


# Every request with a bearer token runs this one (see vesalius.index.prepared).
_TOKEN_BY_HASH = Prepared(
    select(
        ApiToken.id,
        ApiToken.user_pk,
        ApiToken.name,
        ApiToken.prefix,
        ApiToken.created_at,
        ApiToken.last_used_at,
        ApiToken.revoked_at,
        User.id,
        User.username,
        User.full_name,
        User.role,
        User.active,
        User.created_at,
        User.last_login_at,
    )
    .join(User, ApiToken.user_pk == User.id)
    .where(
        ApiToken.token_hash == bindparam("hash"),
        ApiToken.revoked_at.is_(None),
        User.active.is_(true()),
    )
)


def token_by_hash(session: Session, token_hash: str) -> tuple[TokenRecord, UserRecord] | None:
    """The live token of this digest and its active owner."""
    row = _TOKEN_BY_HASH.first(session.connection(), {"hash": token_hash})
    if row is None:
        return None
    return TokenRecord(*row[:7]), UserRecord(*row[7:])


def touch_token(session: Session, token_id: int, now: datetime) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))


def tokens_of(session: Session, user: int) -> list[TokenRecord]:
    rows = session.execute(
        select(ApiToken).where(ApiToken.user_pk == user).order_by(ApiToken.id)
    ).scalars()
    return [_token(r) for r in rows]


def revoke_token(session: Session, token_id: int, user: int | None, now: datetime) -> bool:
    query = update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
    if user is not None:
        query = query.where(ApiToken.user_pk == user)
    return bool(session.execute(query.values(revoked_at=now)).rowcount)  # type: ignore[attr-defined]


# -- failed logins -----------------------------------------------------------------------------


def add_failure(session: Session, username: str, address: str, now: datetime) -> None:
    session.add(LoginFailure(username=username[:64], address=address[:64], at=now))


def failures_since(
    session: Session, since: datetime, username: str, address: str
) -> tuple[int, int]:
    """Failures of the account and of the address since *since*."""
    by_user = session.execute(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.username == username[:64], LoginFailure.at > since)
    ).scalar_one()
    by_address = session.execute(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.address == address[:64], LoginFailure.at > since)
    ).scalar_one()
    return int(by_user), int(by_address)


def clear_failures(session: Session, username: str) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.username == username[:64]))


def delete_failures_before(session: Session, before: datetime) -> int:
    result = session.execute(delete(LoginFailure).where(LoginFailure.at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]


# -- audit -------------------------------------------------------------------------------------


def add_audit_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    if events:
        session.execute(AuditEvent.__table__.insert(), list(events))


@dataclass(frozen=True)
class AuditFilters:
    actor: str | None = None
    action: str | None = None
    text: str | None = None  # in the object or the study UID
    patient: str | None = None  # a patient ID: its pages, and its studies by UID
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0


def search_audit(session: Session, filters: AuditFilters) -> list[dict[str, Any]]:
    query = select(AuditEvent)
    if filters.actor:
        query = query.where(AuditEvent.actor == filters.actor)
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.text:
        pattern = "%" + filters.text.replace("\\", "").replace("%", "").replace("_", "") + "%"
        query = query.where(
            or_(AuditEvent.object.like(pattern), AuditEvent.study_uid == filters.text)
        )
    if filters.patient is not None:
        query = query.where(_about_patient(filters.patient))
    if filters.since:
        query = query.where(AuditEvent.at >= filters.since)
    if filters.until:
        query = query.where(AuditEvent.at < filters.until)
    query = query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    query = query.limit(filters.limit).offset(filters.offset)
    columns = [c.name for c in AuditEvent.__table__.columns]
    return [{c: getattr(row, c) for c in columns} for row in session.execute(query).scalars()]


def _about_patient(patient_id: str) -> Any:
    """Events about a patient: its page and API (the path names the ID), or one of its
    studies (the event's study UID). Events have no patient column; this is what they say."""
    escaped = patient_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    studies = (
        select(Study.study_instance_uid)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(Patient.patient_id == patient_id)
    )
    return or_(
        AuditEvent.object.like(f"% /patients/{escaped}", escape="\\"),
        AuditEvent.object.like(f"% /patients/{escaped}?%", escape="\\"),
        AuditEvent.object.like(f"% /api/patients/{escaped}/studies%", escape="\\"),
        AuditEvent.study_uid.in_(studies),
    )


def delete_audit_before(session: Session, before: datetime) -> int:
    result = session.execute(delete(AuditEvent).where(AuditEvent.at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]
