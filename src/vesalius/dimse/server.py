"""The DICOM ports: a :class:`~vesalius.dimse.listener.Listener` on ``dicom_port``, and a second
one wrapping its connections in TLS on ``dicom_tls_port`` when that is set."""

from __future__ import annotations

from vesalius.archive.service import Archive
from vesalius.auth.accounts import Auth
from vesalius.auth.audit import AuditLog
from vesalius.config import Settings
from vesalius.dimse.listener import Listener


class DicomServer:
    """The DICOM port, and the DICOM TLS port when the settings have one."""

    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        audit: AuditLog | None = None,
        auth: Auth | None = None,
    ) -> None:
        self.listener = Listener(settings, archive, audit, auth)
        self.access = self.listener.access  # who may use which service
        self.tls_listener: Listener | None = None
        self.tls_address: tuple[str, int] | None = None
        if settings.dicom_tls_port is not None:
            from vesalius.tls import server_context

            self.tls_listener = Listener(
                settings,
                archive,
                audit,
                auth,
                port=settings.dicom_tls_port,
                ssl_context=server_context(settings),
            )

    def start(self) -> tuple[str, int]:
        """Start listening; returns the plain port's address (the TLS one: ``tls_address``)."""
        address = self.listener.start()
        if self.tls_listener is not None:
            self.tls_address = self.tls_listener.start()
        return address

    def stop(self) -> None:
        if self.tls_listener is not None:
            self.tls_listener.stop()
        self.listener.stop()
