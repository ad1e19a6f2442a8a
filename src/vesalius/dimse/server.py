"""The DICOM application entity: presentation contexts, pynetdicom settings, start and stop.

pynetdicom's module-level configuration is set here and nowhere else.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from vesalius.archive.service import Archive
from vesalius.auth.accounts import Auth
from vesalius.auth.audit import AuditLog
from vesalius.auth.dimse_access import DimseAccess
from vesalius.config import Settings
from vesalius.dicom.syntaxes import ACCEPTED_TRANSFER_SYNTAXES
from vesalius.dimse import commitment, handlers

log = logging.getLogger(__name__)

QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)


def _configure_pynetdicom() -> None:
    _config.LOG_HANDLER_LEVEL = "none"  # our logging setup decides
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.PASS_CONTEXTVARS = True


def build_ae(settings: Settings) -> AE:
    """The AE with every storage SOP class, the Q/R models and Verification."""
    _configure_pynetdicom()
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.maximum_associations = settings.max_associations
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.acse_timeout = 30
    ae.require_called_aet = settings.check_called_ae_title
    if not settings.accept_unknown_aes:
        ae.require_calling_aet = [remote.ae_title for remote in settings.remote_ae]
    ae.add_supported_context(Verification)
    ae.add_supported_context(commitment.SOP_CLASS)
    for sop_class in QUERY_RETRIEVE:
        ae.add_supported_context(sop_class)
    for context in AllStoragePresentationContexts:
        # scp_role/scu_role: accept the role selection a C-GET requestor proposes.
        ae.add_supported_context(
            context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
        )
    return ae


class _CheapCopyContext(PresentationContext):
    """A presentation context whose deep copy copies lists only.

    pynetdicom deep-copies every supported context for each association it accepts; with the
    ~170 storage classes and their transfer syntaxes that re-validates some 3,000 UIDs and costs
    about 30 ms per association. UIDs are immutable strings, so sharing them is safe.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> _CheapCopyContext:
        clone = _CheapCopyContext.__new__(_CheapCopyContext)
        clone.__dict__ = {
            key: list(value) if isinstance(value, list) else value
            for key, value in self.__dict__.items()
        }
        return clone


class _ReusePortServer(ThreadedAssociationServer):
    """An association server that shares its port with other Vesalius processes."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class PynetdicomServer:
    """The DIMSE service class provider on pynetdicom's threads (``dicom_engine = "pynetdicom"``).

    Kept only to compare the two network layers in the benchmarks; the asyncio one
    (:mod:`vesalius.dimse.listener`) is the default.
    """

    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        audit: AuditLog | None = None,
        auth: Auth | None = None,
        *,
        port: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.port = settings.dicom_port if port is None else port
        self.ssl_context = ssl_context  # set for the listener on dicom_tls_port
        self.audit = audit  # C-STORE/FIND/GET/MOVE are written to the audit trail when given
        # Who may use which service (auth/dimse_access.py); *auth* resolves bound accounts.
        self.access = DimseAccess(settings, audit, auth.active_role if auth else None)
        self.ae = build_ae(settings)
        self._server: ThreadedAssociationServer | None = None

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_CONN_OPEN, handlers.set_nodelay),
            (evt.EVT_C_STORE, handlers.handle_store, [self.archive, self.audit, self.access]),
            (evt.EVT_C_FIND, handlers.handle_find, [self.archive, self.audit, self.access]),
            (evt.EVT_C_GET, handlers.handle_get, [self.archive, self.audit, self.access]),
            (evt.EVT_N_ACTION, commitment.handle_n_action, [self.archive, self.access]),
            (
                evt.EVT_C_MOVE,
                handlers.handle_move,
                [self.archive, self.settings, self.audit, self.access],
            ),
        ]

    def start(self) -> tuple[str, int]:
        """Start listening; returns the address and port actually bound."""
        address = (self.settings.dicom_host, self.port)
        server_class = _ReusePortServer if self.settings.reuse_port else ThreadedAssociationServer
        server = self.ae.make_server(
            address,
            evt_handlers=self.handlers(),
            server_class=server_class,
            ssl_context=self.ssl_context,
        )
        for context in server.contexts:
            context.__class__ = _CheapCopyContext
        thread = threading.Thread(target=server.serve_forever, name="DicomAcceptor", daemon=True)
        thread.start()
        self.ae._servers.append(server)  # so that ae.shutdown() stops it too
        self._server = server
        host, port = server.server_address[:2]
        log.info("DICOM listening on %s:%d as AE %s", host, port, self.settings.ae_title)
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()


class DicomServer:
    """The DICOM port: the asyncio network layer, or pynetdicom's as the settings say."""

    def __init__(
        self,
        settings: Settings,
        archive: Archive,
        audit: AuditLog | None = None,
        auth: Auth | None = None,
    ) -> None:
        from vesalius.dimse.listener import Listener

        engine = PynetdicomServer if settings.dicom_engine == "pynetdicom" else Listener
        self.engine: Listener | PynetdicomServer = engine(settings, archive, audit, auth)
        self.access = self.engine.access  # who may use which service
        # DICOM TLS: a second listener of the same engine on dicom_tls_port.
        self.tls_engine: Listener | PynetdicomServer | None = None
        self.tls_address: tuple[str, int] | None = None
        if settings.dicom_tls_port is not None:
            from vesalius.tls import server_context

            self.tls_engine = engine(
                settings,
                archive,
                audit,
                auth,
                port=settings.dicom_tls_port,
                ssl_context=server_context(settings),
            )

    def start(self) -> tuple[str, int]:
        """Start listening; returns the plain port's address (the TLS one: ``tls_address``)."""
        address = self.engine.start()
        if self.tls_engine is not None:
            self.tls_address = self.tls_engine.start()
        return address

    def stop(self) -> None:
        if self.tls_engine is not None:
            self.tls_engine.stop()
        self.engine.stop()
