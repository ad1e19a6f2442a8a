"""The hourly cleanup: expired sessions, old failed logins, audit events past retention."""

from __future__ import annotations

import logging
import threading

from vesalius.auth.accounts import Auth
from vesalius.auth.audit import AuditLog

log = logging.getLogger(__name__)

INTERVAL = 3600.0


def run_cleanup(auth: Auth, audit: AuditLog) -> tuple[int, int, int]:
    """One pass; returns (sessions, failures, audit events) deleted."""
    sessions, failures = auth.cleanup()
    events = audit.cleanup()
    if sessions or failures or events:
        log.info(
            "cleanup: %d expired sessions, %d old failed logins, %d audit events past retention",
            sessions,
            failures,
            events,
        )
    return sessions, failures, events


def start_maintenance(auth: Auth, audit: AuditLog, interval: float = INTERVAL) -> threading.Event:
    """Run the cleanup now and then every *interval* seconds until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                run_cleanup(auth, audit)
            except Exception:
                log.exception("the cleanup failed; it runs again in %.0f s", interval)
            if stop.wait(interval):
                return

    threading.Thread(target=loop, name="vesalius-cleanup", daemon=True).start()
    return stop
