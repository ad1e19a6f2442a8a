"""Accounts, login sessions and API tokens: the rules of who may get in.

- Passwords are argon2id hashes and must pass the policy of :mod:`vesalius.auth.passwords`.
- A login is refused, whatever the password, once the account or the address has failed too
  often within the lockout window (``login_max_failures_*``, ``login_lockout_minutes``); the
  failures are kept in the index, so every node of a cluster counts the same ones.
- Sessions expire after ``session_hours`` (``remember_days`` with remember-me); disabling an
  account or changing its password ends its sessions.
- API tokens are shown once, stored as digests, revocable, and die with their account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vesalius.auth import passwords, tokens
from vesalius.auth.audit import AuditLog, AuditRecord, utcnow
from vesalius.auth.permissions import Role
from vesalius.config import Settings
from vesalius.errors import Conflict, NotFound
from vesalius.index import people
from vesalius.index.engine import Database
from vesalius.index.people import SessionRecord, TokenRecord, UserRecord

ADMIN_USERNAME = "admin"


class LoginRefused(Exception):
    """The login failed; the message is safe to show (it never says which part was wrong)."""


@dataclass(frozen=True)
class Client:
    """Where a request came from, for the failure counts and the audit trail."""

    address: str = "-"
    user_agent: str | None = None


def _check_username(username: str) -> str:
    username = username.strip()
    if not (1 <= len(username) <= 64) or not all(c.isalnum() or c in "._-@" for c in username):
        raise ValueError("user names have 1 to 64 letters, digits, '.', '_', '-' or '@'")
    return username


def _check_role(role: str) -> str:
    try:
        return Role(role).value
    except ValueError:
        raise ValueError(
            f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}"
        ) from None


class Auth:
    """The accounts service. Every method is safe to call from many threads."""

    def __init__(self, settings: Settings, db: Database, audit: AuditLog) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit

    # -- accounts ------------------------------------------------------------------------------

    def create_user(
        self, username: str, password: str, role: str, full_name: str | None = None
    ) -> UserRecord:
        username, role = _check_username(username), _check_role(role)
        passwords.check_policy(password, username, self.settings.password_min_length)
        digest = passwords.hash_password(password)
        try:
            return self.db.run_write(
                lambda s: people.add_user(s, username, role, digest, full_name, utcnow())
            )
        except IntegrityError:
            raise Conflict(f"the user {username!r} already exists") from None

    def users(self) -> list[UserRecord]:
        with self.db.read() as session:
            return people.list_users(session)

    def user(self, username: str) -> UserRecord:
        with self.db.read() as session:
            found = people.get_user(session, username)
        if found is None:
            raise NotFound(f"no user {username!r}")
        return found

    def active_role(self, username: str) -> str | None:
        """The role of an active account; ``None`` when it is missing or disabled."""
        with self.db.read() as session:
            found = people.get_user(session, username)
        return found.role if found is not None and found.active else None

    def set_password(self, username: str, password: str) -> None:
        """Change a password and end the account's sessions."""
        passwords.check_policy(password, username, self.settings.password_min_length)
        digest = passwords.hash_password(password)
        self._update(username, password_hash=digest, password_changed_at=utcnow())
        self._end_sessions(username)

    def change_own_password(self, username: str, current: str, new: str) -> None:
        with self.db.read() as session:
            found = people.password_hash_of(session, username)
        if found is None or not passwords.verify_password(found[1], current):
            raise LoginRefused("the current password is not right")
        self.set_password(username, new)

    def set_active(self, username: str, active: bool) -> None:
        """Enable or disable an account; disabling ends its sessions (its tokens stop working).

        The last active administrator cannot be disabled (:class:`Conflict`).
        """
        self._update(username, keep_an_admin=not active, active=active)
        if not active:
            self._end_sessions(username)

    def set_role(self, username: str, role: str) -> None:
        """Change an account's role; the last active administrator keeps theirs."""
        role = _check_role(role)
        self._update(username, keep_an_admin=role != Role.ADMIN, role=role)

    def _update(self, username: str, keep_an_admin: bool = False, **values: object) -> None:
        def work(session: Session) -> bool:
            if keep_an_admin:
                admins = people.active_admins(session, Role.ADMIN.value)
                if admins == [username]:
                    raise Conflict(
                        f"{username} is the last active administrator: make another account "
                        "administrator first"
                    )
            return people.update_user(session, username, **values)

        if not self.db.run_write(work):
            raise NotFound(f"no user {username!r}")

    def _end_sessions(self, username: str) -> None:
        def work(session: Session) -> None:
            pk = people.user_pk(session, username)
            if pk is not None:
                people.delete_sessions_of(session, pk)

        self.db.run_write(work)

    def ensure_admin(self, password: str | None) -> str | None:
        """Create the ``admin`` account when there is no account at all.

        Uses *password* (``VESALIUS_ADMIN_PASSWORD``) when given, otherwise a generated one,
        which is returned so the caller prints it once. Returns ``None`` when accounts exist.
        """
        with self.db.read() as session:
            if people.count_users(session):
                return None
        chosen = password or passwords.generate_password()
        try:
            self.create_user(ADMIN_USERNAME, chosen, Role.ADMIN, "Administrator")
        except Conflict:
            return None  # another node created it first
        return None if password else chosen

    # -- login sessions ------------------------------------------------------------------------

    def login(
        self, username: str, password: str, client: Client, remember: bool = False
    ) -> tuple[str, SessionRecord]:
        """Check the password and open a session; returns the cookie value and the session.

        Raises
        ------
        LoginRefused
            Wrong user name or password, a disabled account, or too many failures.
        """
        settings = self.settings
        username = username.strip()[:64]
        now = utcnow()
        window = now - timedelta(minutes=settings.login_lockout_minutes)
        with self.db.read() as session:
            by_user, by_address = people.failures_since(session, window, username, client.address)
            found = people.password_hash_of(session, username)
        if (
            by_user >= settings.login_max_failures_per_account
            or by_address >= settings.login_max_failures_per_address
        ):
            self._failed(username, client, now, "locked")
            raise LoginRefused(
                "too many failed logins; try again in "
                f"{settings.login_lockout_minutes} minutes or ask an administrator"
            )
        user, digest = found if found else (None, None)
        if user is None or not passwords.verify_password(digest, password) or not user.active:
            self._failed(username, client, now, "refused")
            raise LoginRefused("wrong user name or password")
        assert digest is not None
        token = tokens.new_session_token()
        hours = settings.remember_days * 24 if remember else settings.session_hours
        expires = now + timedelta(hours=hours)
        csrf = tokens.new_csrf_token()
        rehash = passwords.hash_password(password) if passwords.needs_rehash(digest) else None

        def work(session: Session) -> None:
            people.add_session(
                session,
                token_hash=tokens.digest(token),
                user_pk=user.id,
                csrf_token=csrf,
                created_at=now,
                expires_at=expires,
                remember=remember,
                address=client.address[:64],
                user_agent=(client.user_agent or "")[:255] or None,
            )
            values: dict[str, object] = {"last_login_at": now}
            if rehash:
                values["password_hash"] = rehash
            people.update_user(session, username, **values)
            people.clear_failures(session, username)

        self.db.run_write(work)
        self.audit.record(
            AuditRecord(
                user.username,
                "login",
                "http",
                None,
                None,
                "ok",
                client.address,
                client.user_agent,
                "remember-me" if remember else None,
            )
        )
        return token, SessionRecord(0, user, csrf, expires, remember)

    def _failed(self, username: str, client: Client, now: datetime, outcome: str) -> None:
        self.db.run_write(lambda s: people.add_failure(s, username, client.address, now))
        self.audit.record(
            AuditRecord(
                username or "-",
                "login_failed",
                "http",
                None,
                None,
                outcome,
                client.address,
                client.user_agent,
            )
        )

    def session(self, token: str) -> SessionRecord | None:
        """The live session of a cookie value, or ``None`` (unknown, expired, account off)."""
        if not token or len(token) > 128:
            return None
        with self.db.read() as session:
            return people.session_by_hash(session, tokens.digest(token), utcnow())

    def logout(self, token: str, client: Client) -> None:
        record = self.session(token)
        self.db.run_write(lambda s: people.delete_session(s, tokens.digest(token)))
        if record is not None:
            self.audit.record(
                AuditRecord(
                    record.user.username,
                    "logout",
                    "http",
                    None,
                    None,
                    "ok",
                    client.address,
                    client.user_agent,
                )
            )

    def active_sessions(self) -> int:
        with self.db.read() as session:
            return people.count_active_sessions(session, utcnow())

    # -- API tokens ----------------------------------------------------------------------------

    def create_token(self, username: str, name: str) -> tuple[str, TokenRecord]:
        """A new API token for *username*; the secret is returned here and never again."""
        secret = tokens.new_api_token()
        name = (name or "token").strip()[:128]

        def work(session: Session) -> TokenRecord:
            pk = people.user_pk(session, username)
            if pk is None:
                raise NotFound(f"no user {username!r}")
            return people.add_token(
                session,
                token_hash=tokens.digest(secret),
                user_pk=pk,
                name=name,
                prefix=tokens.display_prefix(secret),
                created_at=utcnow(),
            )

        return secret, self.db.run_write(work)

    def tokens_of(self, username: str) -> list[TokenRecord]:
        with self.db.read() as session:
            pk = people.user_pk(session, username)
            return people.tokens_of(session, pk) if pk is not None else []

    def revoke_token(self, token_id: int, owner: str | None = None) -> None:
        """Revoke a token (only one of *owner*'s when given)."""

        def work(session: Session) -> bool:
            pk = people.user_pk(session, owner) if owner is not None else None
            if owner is not None and pk is None:
                return False
            return people.revoke_token(session, token_id, pk, utcnow())

        if not self.db.run_write(work):
            raise NotFound(f"no active token {token_id}")

    def token_user(self, secret: str, username: str | None = None) -> UserRecord | None:
        """The account of an API token (whose owner must be *username* when given)."""
        if not tokens.looks_like_api_token(secret):
            return None
        with self.db.read() as session:
            found = people.token_by_hash(session, tokens.digest(secret))
        if found is None:
            return None
        token, user = found
        if username is not None and username != user.username:
            return None
        now = utcnow()
        if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=5):
            self.db.run_write(lambda s: people.touch_token(s, token.id, now))
        return user

    # -- maintenance ---------------------------------------------------------------------------

    def cleanup(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete expired sessions and failures older than a day; returns both counts."""
        now = now or utcnow()

        def work(session: Session) -> tuple[int, int]:
            return (
                people.delete_expired_sessions(session, now),
                people.delete_failures_before(session, now - timedelta(days=1)),
            )

        return self.db.run_write(work)
