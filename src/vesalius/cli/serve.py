"""``vesalius serve``: DICOM and HTTP in one process, with a clean stop on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from vesalius.auth.maintenance import start_maintenance
from vesalius.config import Settings
from vesalius.container import Container, build
from vesalius.dimse.server import DicomServer
from vesalius.index.migrate import current_revision, head_revision
from vesalius.logs import setup_logging

log = logging.getLogger("vesalius.serve")


class ServeError(Exception):
    pass


def open_container(settings: Settings) -> Container:
    """Open the archive; migrate the embedded SQLite index, check a server database's."""
    is_sqlite = settings.effective_database_url.startswith("sqlite")
    container = build(settings, migrate=is_sqlite)
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
    try:
        container = open_container(settings)
    except ServeError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    except Exception as exc:
        log.error("cannot open the archive: %s (try `vesalius doctor`)", exc)
        raise SystemExit(1) from None
    _first_admin(container)
    maintenance = start_maintenance(container.auth, container.audit)
    dicom = DicomServer(settings, container.archive, container.audit)
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
        container.close()
        raise SystemExit(1) from None
    log.info("dicom_port=%d", port)
    stop = threading.Event()
    try:
        if settings.http_enabled:
            _serve_http(settings, container, stop)
        else:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
    finally:
        log.info("stopping")
        dicom.stop()
        maintenance.set()
        container.close()
        log.info("stopped")


def _first_admin(container: Container) -> None:
    """Create `admin` at the first start; a generated password is logged this once."""
    generated = container.auth.ensure_admin(container.settings.admin_password)
    if generated:
        log.warning(
            "created the account `admin` with the password %s (shown only now: log in and "
            "change it, or set VESALIUS_ADMIN_PASSWORD before the first start)",
            generated,
        )


def _serve_http(settings: Settings, container: Container, stop: threading.Event) -> None:
    import uvicorn

    from vesalius.web.app import create_app

    app = create_app(container)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets: object = None) -> None:
        await original_startup(sockets=sockets)  # type: ignore[arg-type]
        for sock_server in server.servers:
            for sock in sock_server.sockets:
                addr = sock.getsockname()
                log.info("HTTP listening on http://%s:%d", addr[0], addr[1])
                log.info("http_port=%d", addr[1])

    server.startup = startup  # type: ignore[method-assign]
    # uvicorn re-raises SIGTERM after its own shutdown, which would skip ours: handle it here.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]

    def request_exit(*_: object) -> None:
        server.should_exit = True
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_exit)
    server.run()
    stop.set()
