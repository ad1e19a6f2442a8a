"""The DICOM port on asyncio: one event loop in a thread of its own, one task per association.

The loop is uvloop's where it is installed (it is a dependency on Linux and macOS): its
event dispatch is compiled, where asyncio's selector loop runs a Python function per event
and per callback, and a stored instance takes a dozen of them.

Connections are taken by a :class:`~vesalius.workers.Acceptor` rather than asyncio's server,
so that the workers of one ``serve`` sharing the port leave each new association to the least
busy of them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading

from vesalius.archive.service import Archive
from vesalius.auth.accounts import Auth
from vesalius.auth.audit import AuditLog
from vesalius.auth.dimse_access import DimseAccess
from vesalius.config import Settings
from vesalius.dimse.association import Association
from vesalius.dimse.negotiation import Supported
from vesalius.dimse.services import Services
from vesalius.dimse.stream import PduStream
from vesalius.tls import HANDSHAKE_TIMEOUT
from vesalius.workers import Acceptor, bind, inherited_socket

log = logging.getLogger(__name__)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An event loop for the DICOM port: uvloop's, or asyncio's where uvloop is missing."""
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Listener:
    """Accepts associations on the DICOM port and serves each as an :class:`Association`."""

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
        # A second listener on dicom_tls_port wraps its connections in TLS (vesalius.tls).
        self.port = settings.dicom_port if port is None else port
        self.ssl_context = ssl_context
        self.supported = Supported.archive()
        # Who may use which service (auth/dimse_access.py); *auth* resolves bound accounts.
        self.access = DimseAccess(settings, audit, auth.active_role if auth else None)
        self.services = Services(settings, archive, audit, self.access)
        self.active = 0
        self.associations: set[Association] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: Acceptor | None = None

    async def _accept(self, reader: PduStream, writer: asyncio.StreamWriter) -> None:
        association = Association(self, reader, writer)
        self.associations.add(association)
        try:
            await association.run()
        finally:
            self.associations.discard(association)

    def _handoff(self, conn: socket.socket) -> None:
        """A connection the acceptor took: serve it in a task of its own."""
        assert self._loop is not None
        self._loop.create_task(self._connected(conn))

    async def _connected(self, conn: socket.socket) -> None:
        self.active += 1
        try:
            await self._serve(conn)
        finally:
            self.active -= 1
            if self._acceptor is not None:
                self._acceptor.closed()

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        protocol = PduStream(loop)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self.ssl_context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self.ssl_context else None,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.info("DICOM connection dropped before it started: %s", exc)
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        await self._accept(protocol, writer)

    def _socket(self) -> socket.socket:
        shared = inherited_socket("dicom_tls" if self.ssl_context else "dicom")
        if shared is not None:  # a worker of `serve`: the parent bound the port
            return shared
        return bind(
            self.settings.dicom_host,
            self.port,
            reuse_port=self.settings.reuse_port,
            backlog=256,
        )

    def start(self) -> tuple[str, int]:
        """Start listening; returns the address and port actually bound."""
        sock = self._socket()  # raises OSError here, in the caller's thread
        ready = threading.Event()
        loop = new_event_loop()
        self._loop = loop

        self._acceptor = Acceptor(loop, sock, "dicom", self._handoff)

        async def serve() -> None:
            assert self._acceptor is not None
            self._acceptor.start()
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="DicomLoop", daemon=True)
        self._thread.start()
        ready.wait(10)
        host, port = sock.getsockname()[:2]
        kind = "DICOM TLS" if self.ssl_context else "DICOM"
        log.info("%s listening on %s:%d as AE %s", kind, host, port, self.settings.ae_title)
        return str(host), int(port)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._acceptor is not None:
                self._acceptor.stop()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(10)
        self.services.close()
        self._loop = self._thread = None
