"""Records tests run against the real HTTP server: uvicorn on an ephemeral port, httpx over a
socket. ``http`` runs on SQLite, PostgreSQL and MariaDB; ``sqlite_http`` on SQLite only.

Both use the CAP identifier scheme and small limits, so hostile uploads are cheap to make.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vesalius.container import Container, build

sys.path.insert(0, str(Path(__file__).parent))

from records_helpers import LIMITS, RunningHttp, serve


@pytest.fixture
def records_container(make_settings: Any, database_url: str) -> Iterator[Container]:
    built = build(make_settings(database_url=database_url, **LIMITS), migrate=True)
    yield built
    built.close()


@pytest.fixture
def http(records_container: Container) -> Iterator[RunningHttp]:
    """The HTTP server on each database backend (CAP scheme, small limits)."""
    yield from serve(records_container)


@pytest.fixture
def sqlite_http(make_settings: Any) -> Iterator[RunningHttp]:
    """The HTTP server on the embedded SQLite index (CAP scheme, small limits)."""
    built = build(make_settings(**LIMITS), migrate=True)
    try:
        yield from serve(built)
    finally:
        built.close()


@pytest.fixture
def empty_twin(
    request: pytest.FixtureRequest,
    make_settings: Any,
    database_url: str,
    server_databases: Any,
    tmp_path: Path,
) -> Iterator[RunningHttp]:
    """A second, empty archive on the same backend as ``http`` (for export -> import)."""
    backend = database_url.split(":", 1)[0].split("+", 1)[0]
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'twin.sqlite'}"
    else:
        url = server_databases.create("postgresql" if backend == "postgresql" else "mariadb")
    built = build(
        make_settings(database_url=url, data_dir=tmp_path / "twin", **LIMITS), migrate=True
    )
    try:
        yield from serve(built)
    finally:
        built.close()
