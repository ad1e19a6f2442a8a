"""``vesalius serve``: DICOM and HTTP in one process, with a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

from vesalius import plugins, workers
from vesalius.auth.maintenance import start_maintenance
from vesalius.config import ConfigError, Settings
from vesalius.container import Container, build
from vesalius.dimse.server import DicomServer
from vesalius.federation import jobs as federation_jobs
from vesalius.index.migrate import current_revision, head_revision
from vesalius.jobs.runner import JobRunner
from vesalius.logs import setup_logging

log = logging.getLogger("vesalius.serve")


class ServeError(Exception):
    pass


def open_container(settings: Settings) -> Container:
    """Open the archive; migrate the embedded SQLite index, check a server database's."""
    is_sqlite = settings.effective_database_url.startswith("sqlite")
    container = build(settings, migrate=is_sqlite)
    _recover_unflushed(container)
    if not is_sqlite:
        current, head = current_revision(container.db.engine), head_revision()
        if current != head:
            container.close()
            raise ServeError(
                f"the database schema is at {current or 'nothing'}, this Vesalius needs {head}: "
                "run `vesalius db upgrade` first"
            )
    return container


def run(settings: Settings) -> None:
    setup_logging(settings.log_level, plain=True)
    if settings.workers > 1:
        raise SystemExit(_run_workers(settings))
    try:
        container = open_container(settings)
    except (ServeError, plugins.PluginError) as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    except Exception as exc:
        log.error("cannot open the archive: %s (try `vesalius doctor`)", exc)
        raise SystemExit(1) from None
    _first_admin(container)
    _sweep_temporaries(container)
    maintenance = start_maintenance(container.auth, container.audit)
    try:
        dicom = DicomServer(settings, container.archive, container.audit, container.auth)
    except ConfigError as exc:  # e.g. a DICOM TLS certificate that cannot be used
        log.error("%s", exc)
        container.close()
        raise SystemExit(2) from None
    federation_jobs.install(container)  # the push to a central index, when this is a site
    federation_jobs.install_mirror(container)  # the [[remote_pacs]] syncs and retrievals
    # The HTTP application is built before the DICOM port opens: a server that answers C-ECHO
    # is wholly started (building the app takes a second of CPU, which a sender's first
    # C-STOREs would otherwise share), and its objects are frozen with the rest below.
    app = _http_app(container) if settings.http_enabled else None
    runner = JobRunner(container).start() if settings.jobs_enabled else None
    try:
        _host, port = dicom.start()
    except OSError as exc:
        log.error(
            "cannot listen for DICOM on %s:%d: %s (is another PACS running? set "
            "VESALIUS_DICOM_PORT)",
            settings.dicom_host,
            settings.dicom_port,
            exc,
        )
        if runner is not None:
            runner.stop()
        container.close()
        raise SystemExit(1) from None
    log.info("dicom_port=%d", port)
    _settle_garbage_collector()
    if dicom.tls_address is not None:
        log.info("dicom_tls_port=%d", dicom.tls_address[1])
    stop = threading.Event()
    try:
        if app is not None:
            _serve_http(settings, app, stop)
        else:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
    finally:
        log.info("stopping")
        dicom.stop()
        if runner is not None:
            runner.stop()
        maintenance.set()
        container.close()
        log.info("stopped")


def _run_workers(settings: Settings) -> int:
    """Prepare the archive once, then run *workers* identical processes on shared ports.

    Each process is a whole Vesalius (DICOM and HTTP). This parent binds the ports and the
    workers inherit the listening sockets, with a load board on which they leave each new
    association to the least busy of them (:mod:`vesalius.workers`). They share the index and
    the blob store, as nodes do.
    """
    try:
        container = open_container(settings)
    except (ServeError, Exception) as exc:
        log.error("cannot open the archive: %s (try `vesalius doctor`)", exc)
        return 1
    _first_admin(container)
    container.close()
    try:
        sockets = _bind_shared(settings)
    except OSError as exc:
        log.error("cannot listen: %s (is another server on these ports?)", exc)
        return 1
    fds = {name: sock.fileno() for name, sock in sockets.items()}
    fds["board"] = workers.LoadBoard.create()
    env = {
        **os.environ,
        "VESALIUS_WORKERS": "1",
        "VESALIUS_REUSE_PORT": "true",
        workers.FDS_ENV: workers.encode_fds(fds),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "vesalius", "serve"],
            env={**env, workers.SLOT_ENV: f"{slot}/{settings.workers}"},
            pass_fds=list(fds.values()),
        )
        for slot in range(settings.workers)
    ]
    for sock in sockets.values():
        sock.close()  # the workers hold them now
    os.close(fds["board"])
    log.info("started %d worker processes: %s", len(children), [c.pid for c in children])

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    status = 0
    while children:
        for child in list(children):
            code = child.poll()
            if code is None:
                continue
            children.remove(child)
            if code != 0 and status == 0:
                log.error("worker %d exited with status %d; stopping the others", child.pid, code)
                status = 1
                forward(signal.SIGTERM, None)
        time.sleep(0.2)
    log.info("stopped")
    return status


def _bind_shared(settings: Settings) -> dict[str, socket.socket]:
    """The listening sockets the workers share, by the names :mod:`vesalius.workers` uses."""
    ports = {"dicom": (settings.dicom_host, settings.dicom_port)}
    if settings.dicom_tls_port is not None:
        ports["dicom_tls"] = (settings.dicom_host, settings.dicom_tls_port)
    if settings.http_enabled:
        ports["http"] = (settings.http_host, settings.http_port)
    sockets: dict[str, socket.socket] = {}
    try:
        for name, (host, port) in ports.items():
            sockets[name] = workers.bind(host, port)
    except OSError:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


def _settle_garbage_collector() -> None:
    """Move what start-up built (modules, the container, pydicom's dictionaries: ~170,000
    objects) out of the collector's sight, and let young objects live longer before a pass.

    Profiles of C-FIND and C-STORE found Python's full collections, each walking every
    tracked object, costing more than the query that triggered them (10.1 ms of CPU for a
    200-answer C-FIND, 3.9 ms with the start-up objects frozen). Those objects live as long
    as the process, so nothing is lost by never collecting them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _recover_unflushed(container: Container) -> None:
    """Mend what a power cut left of the index's unflushed log, then start flushing it.

    Only the serving process records its flushes (see :mod:`vesalius.index.durability`), so
    the files stored since the last recorded one are still there to check.
    """
    index_log = container.db.log
    if index_log is None:
        return
    since = index_log.flushed_at()
    # The workers of `serve` with workers > 1 share the ports: their parent recovered before
    # starting them, and one must not index the files a sibling is about to commit.
    if since is not None and not container.settings.reuse_port:
        recovered = container.archive.recover_unflushed(since)
        if recovered:
            log.warning(
                "re-indexed %d instance(s) stored before the last stop whose rows had not "
                "reached the disk (a power cut?)",
                len(recovered),
            )
    index_log.flush()
    index_log.start()


def _sweep_temporaries(container: Container) -> None:
    """Remove the temporary files a crash left (spools of live processes are locked, kept)."""
    try:
        removed = container.blobs.sweep_temporaries()
    except OSError as exc:
        log.warning("could not sweep the storage's temporary files: %s", exc)
        return
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted store", removed)


def _first_admin(container: Container) -> None:
    """Create `admin` at the first start; a generated password is logged this once."""
    generated = container.auth.ensure_admin(container.settings.admin_password)
    if generated:
        log.warning(
            "created the account `admin` with the password %s (shown only now: log in and "
            "change it, or set VESALIUS_ADMIN_PASSWORD before the first start)",
            generated,
        )


def _http_app(container: Container) -> Any:
    from vesalius.web.app import create_app

    return create_app(container)


def _serve_http(settings: Settings, app: Any, stop: threading.Event) -> None:
    import uvicorn

    from vesalius.web.http_protocol import BodyProtocol

    config = uvicorn.Config(
        app,
        http=BodyProtocol,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)

    original_startup, original_shutdown = server.startup, server.shutdown
    inherited = workers.inherited_socket("http")  # a worker of `serve`: see vesalius.workers
    acceptor: workers.Acceptor | None = None

    async def startup(sockets: object = None) -> None:
        nonlocal acceptor
        await original_startup(sockets=[] if inherited else sockets)  # type: ignore[arg-type]
        if inherited is not None:
            acceptor = _accept_http(server, inherited)
        listening = [sock for s in server.servers for sock in s.sockets]
        for sock in listening + ([inherited] if inherited else []):
            addr = sock.getsockname()
            log.info("HTTP listening on http://%s:%d", addr[0], addr[1])
            log.info("http_port=%d", addr[1])

    async def shutdown(sockets: object = None) -> None:
        if acceptor is not None:
            acceptor.stop()
        await original_shutdown(sockets=sockets)  # type: ignore[arg-type]

    server.startup = startup  # type: ignore[method-assign]
    server.shutdown = shutdown  # type: ignore[method-assign]
    shared = None
    if inherited is None and settings.reuse_port:
        shared = workers.bind(settings.http_host, settings.http_port, reuse_port=True)
    sockets = [shared] if shared is not None else None
    # uvicorn re-raises SIGTERM after its own shutdown, which would skip ours: handle it here.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]

    def request_exit(*_: object) -> None:
        server.should_exit = True
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_exit)
    server.run(sockets=sockets)
    stop.set()


def _accept_http(server: Any, sock: socket.socket) -> workers.Acceptor:
    """Take HTTP connections from the workers' shared socket into uvicorn, one at a time.

    uvicorn's own listener (asyncio's server) takes every pending connection at each wake-up,
    so the keep-alive connections of several clients all went to one worker. Each connection
    gets the protocol uvicorn would have made, counted on the load board until it is lost.
    """
    loop = asyncio.get_running_loop()
    config = server.config

    async def connect(conn: socket.socket) -> None:
        protocol = config.http_protocol_class(
            config=config,
            server_state=server.server_state,
            app_state=server.lifespan.state,
            _loop=loop,
        )
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            acceptor.closed()
            lost(exc)

        protocol.connection_lost = connection_lost
        try:
            await loop.connect_accepted_socket(lambda: protocol, conn, ssl=config.ssl)
        except (OSError, ssl.SSLError) as exc:
            log.info("HTTP connection dropped before it started: %s", exc)
            acceptor.closed()
            conn.close()

    acceptor = workers.Acceptor(loop, sock, "http", lambda conn: loop.create_task(connect(conn)))
    acceptor.start()
    return acceptor
