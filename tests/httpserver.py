"""The HTTP application served for real on 127.0.0.1:<ephemeral port>, for the tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from vesalius.container import Container
from vesalius.web.app import create_app
from vesalius.web.http_protocol import BodyProtocol


@contextmanager
def running_app(container: Container) -> Iterator[str]:
    """Run the app of *container* with uvicorn in a thread; yields its base URL."""
    with serving(create_app(container)) as url:
        yield url


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run the ASGI *app* with uvicorn in a thread, as `vesalius serve` runs its HTTP side
    (its protocol: :mod:`vesalius.web.http_protocol`); yields its base URL."""
    config = uvicorn.Config(
        app,
        http=BodyProtocol,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn-test")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test HTTP server did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
