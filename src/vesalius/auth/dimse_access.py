"""Who may use which DIMSE service: the DICOM half of the one permission decision.

A calling AE title listed as a ``[[remote_ae]]`` with a ``role`` (or a bound ``user`` account)
may use the services that role's permissions allow, by the same table as HTTP
(:data:`vesalius.auth.permissions.DIMSE_RULES`); every other caller may use only the services
of ``unknown_ae_services`` (C-ECHO and C-STORE by default).

:func:`decide` is a pure function any network layer can call per request; :class:`DimseAccess`
wraps it with what a server needs around it: the bound accounts' roles, the log line and the
audit event of a refusal. A refusal is answered with status 0x0124 (Refused: Not Authorized,
PS3.7 C.5) and the decision's reason as the Error Comment.

The calling AE title is sent by the caller and can be forged: a listed AE with a ``host`` is
trusted only from that host (``remote_ae_check_host``). The called AE title is not checked by
default (``check_called_ae_title``): like Orthanc, Vesalius answers to any called title, since
it is no secret and grants nothing.

Examples
--------
>>> from vesalius.config import Settings, RemoteAE
>>> settings = Settings(remote_ae=[RemoteAE(name="ws", ae_title="WS1", role="radiologist")])
>>> decide(settings, "WS1", "VESALIUS", DimseService.FIND).allowed
True
>>> decide(settings, "STRANGER", "VESALIUS", DimseService.FIND).allowed
False
>>> decide(settings, "STRANGER", "VESALIUS", DimseService.STORE).allowed
True
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vesalius.auth.audit import AuditLog, AuditRecord
from vesalius.auth.permissions import DIMSE_RULES, DimseService, role_may
from vesalius.config import RemoteAE, Settings

log = logging.getLogger(__name__)

NOT_AUTHORIZED = 0x0124  # PS3.7 C.5: Refused: Not Authorized

__all__ = ["NOT_AUTHORIZED", "Decision", "DimseAccess", "DimseService", "decide"]


@dataclass(frozen=True)
class Decision:
    """Whether *calling_ae* may use *service*, and why (the Error Comment of a refusal)."""

    allowed: bool
    service: DimseService
    calling_ae: str
    reason: str
    role: str | None = None
    user: str | None = None
    status: int = 0x0000

    @property
    def label(self) -> str:
        return DIMSE_RULES[self.service].label


def decide(
    settings: Settings,
    calling_ae: str,
    called_ae: str,
    service: DimseService | str,
    *,
    address: str | None = None,
    user_role: Callable[[str], str | None] | None = None,
    certificate: str | None = None,
) -> Decision:
    """May *calling_ae* (calling *called_ae*, from *address*) use *service*?

    *user_role* gives the role of an active account (``None`` for a missing or disabled one);
    without it, an AE bound to a user is refused.
    """
    service = DimseService(service)
    calling = calling_ae.strip()
    called = called_ae.strip()
    rule = DIMSE_RULES[service]

    def refuse(reason: str, role: str | None = None, user: str | None = None) -> Decision:
        return Decision(False, service, calling, reason, role, user, NOT_AUTHORIZED)

    if settings.check_called_ae_title and called != settings.ae_title:
        return refuse(f"called AE title {called!r} is not this archive's ({settings.ae_title})")
    if service is DimseService.ECHO:
        return Decision(True, service, calling, "C-ECHO is open to every caller")
    entry, elsewhere = _binding(settings, calling, address, certificate)
    if entry is None:
        if service in settings.unknown_ae_services:
            return Decision(True, service, calling, f"{rule.label} is open to unlisted AEs")
        if elsewhere:
            return refuse(
                f"AE {calling} is listed for another host; {rule.label} refused from {address}"
            )
        return refuse(f"AE {calling} is not listed with a role; {rule.label} refused")
    role = entry.role
    if entry.user is not None:
        role = user_role(entry.user) if user_role is not None else None
        if role is None:
            return refuse(
                f"AE {calling}: account {entry.user} is missing or disabled", None, entry.user
            )
    assert role is not None
    if role_may(role, rule.permission):
        return Decision(True, service, calling, f"role {role} may {rule.label}", role, entry.user)
    return refuse(f"AE {calling}: role {role} lacks {rule.permission}", role, entry.user)


def _binding(
    settings: Settings, calling: str, address: str | None, certificate: str | None = None
) -> tuple[RemoteAE | None, bool]:
    """The listed entry with a role or user for *calling* at *address*, and whether one exists
    only for other hosts.

    An entry with a ``certificate`` needs the caller's verified TLS certificate of that name,
    and then holds from any address.
    """
    bound = [
        ae
        for ae in settings.remote_ae
        if ae.ae_title == calling and (ae.role is not None or ae.user is not None)
    ]
    if certificate is not None:
        for ae in bound:
            if ae.certificate == certificate:
                return ae, False
    bound = [ae for ae in bound if ae.certificate is None]
    if not settings.remote_ae_check_host:
        return (bound[0] if bound else None), False
    for ae in bound:
        if ae.host is None or (address is not None and _host_matches(ae.host, address)):
            return ae, False
    return None, bool(bound)


def _host_matches(host: str, address: str) -> bool:
    return host == address or address in _addresses(host)


@functools.lru_cache(maxsize=256)
def _addresses(host: str) -> frozenset[str]:
    """The addresses *host* resolves to (cached for the life of the process)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


class DimseAccess:
    """:func:`decide` with the roles of bound accounts, a log line and an audit event on refusal.

    Account roles are cached for a few seconds, so a stream of C-STOREs does not read the
    accounts table once per instance; a disabled account stops working within that time.
    """

    ROLE_CACHE_SECONDS = 5.0

    def __init__(
        self,
        settings: Settings,
        audit: AuditLog | None = None,
        roles: Callable[[str], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self._roles = roles
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def check(
        self,
        calling_ae: str,
        called_ae: str,
        service: DimseService | str,
        *,
        address: str | None = None,
        what: str | None = None,
        certificate: str | None = None,
    ) -> Decision:
        """Decide, and log and audit a refusal (*what* names the object of the request)."""
        decision = decide(
            self.settings,
            calling_ae,
            called_ae,
            service,
            address=address,
            user_role=self._role_of if self._roles is not None else None,
            certificate=certificate,
        )
        if not decision.allowed:
            log.warning(
                "%s from %s at %s refused: %s", decision.label, decision.calling_ae, address,
                decision.reason,
            )  # fmt: skip
            if self.audit is not None:
                self.audit.record(
                    AuditRecord(
                        actor=f"AE:{decision.calling_ae}",
                        action=DIMSE_RULES[decision.service].action,
                        protocol="dimse",
                        object=what or decision.label,
                        outcome="refused",
                        address=address,
                        detail=decision.reason,
                    )
                )
        return decision

    def _role_of(self, username: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(username)
        if cached is not None and now - cached[0] < self.ROLE_CACHE_SECONDS:
            return cached[1]
        assert self._roles is not None
        role = self._roles(username)
        with self._lock:
            self._cache[username] = (now, role)
        return role
