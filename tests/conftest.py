"""Shared fixtures: settings, databases on SQLite/PostgreSQL/MariaDB, and running servers.

PostgreSQL and MariaDB are found through ``VESALIUS_TEST_POSTGRESQL_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) and ``VESALIUS_TEST_MYSQL_URL``
(default ``mysql+pymysql://root@127.0.0.1:3306/mysql``). Each test session creates its own
databases there and drops them at the end. When a server cannot be reached its tests are
skipped, unless ``VESALIUS_TEST_REQUIRE_DATABASES=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))

from vesalius.config import Settings
from vesalius.container import Container, build

POSTGRESQL_ADMIN = os.environ.get(
    "VESALIUS_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN = os.environ.get("VESALIUS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
REQUIRE = os.environ.get("VESALIUS_TEST_REQUIRE_DATABASES") == "1"

BACKENDS = ["sqlite", "postgresql", "mariadb"]


def _unavailable(backend: str, exc: Exception) -> None:
    message = (
        f"{backend} is not reachable ({str(exc).splitlines()[0]}); start it or point "
        f"VESALIUS_TEST_{'POSTGRESQL' if backend == 'postgresql' else 'MYSQL'}_URL at one"
    )
    if REQUIRE:
        pytest.fail(message)
    pytest.skip(message)


class ServerDatabases:
    """Creates throwaway databases on the PostgreSQL and MariaDB servers."""

    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []
        self.worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")

    def create(self, backend: str) -> str:
        admin = POSTGRESQL_ADMIN if backend == "postgresql" else MYSQL_ADMIN
        name = f"vesalius_test_{self.worker}_{secrets.token_hex(4)}"
        try:
            engine = create_engine(admin, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                if backend == "postgresql":
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                else:
                    conn.execute(
                        text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                    )
            engine.dispose()
        except Exception as exc:
            _unavailable(backend, exc)
        self.created.append((backend, name))
        return make_url(admin).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for backend, name in self.created:
            admin = POSTGRESQL_ADMIN if backend == "postgresql" else MYSQL_ADMIN
            engine = create_engine(admin, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                if backend == "postgresql":
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            engine.dispose()


@pytest.fixture(scope="session")
def server_databases() -> Iterator[ServerDatabases]:
    databases = ServerDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture
def make_settings(tmp_path: Path) -> Any:
    """Build settings for a test: a temporary data folder, ephemeral ports, loopback."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "dicom_host": "127.0.0.1",
            "dicom_port": 0,
            "http_host": "127.0.0.1",
            "http_port": 0,
        }
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, server_databases: ServerDatabases
) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    return server_databases.create(request.param)


@pytest.fixture
def container(make_settings: Any, database_url: str) -> Iterator[Container]:
    """An open archive (migrated index and blob store) on each database backend."""
    built = build(make_settings(database_url=database_url), migrate=True)
    yield built
    built.close()


@pytest.fixture
def sqlite_container(make_settings: Any) -> Iterator[Container]:
    """An open archive on the embedded default only (for tests not about the database)."""
    built = build(make_settings(), migrate=True)
    yield built
    built.close()


@dataclass
class RunningDicom:
    host: str
    port: int
    ae_title: str
    container: Container

    @property
    def archive(self) -> Any:
        return self.container.archive


# The calling AE titles the DIMSE tests use (pynetdicom's client and DCMTK's defaults), listed
# with a role: an unlisted AE may only echo and store (``unknown_ae_services``).
TEST_CALLING_AES = ("TESTSCU", "FINDSCU", "GETSCU", "MOVESCU", "CHARSETSCU")


def listed_test_aes(role: str = "radiologist") -> list[Any]:
    from vesalius.config import RemoteAE

    return [RemoteAE(name=f"test-{t.lower()}", ae_title=t, role=role) for t in TEST_CALLING_AES]


def _start_dicom(container: Container) -> Iterator[RunningDicom]:
    from vesalius.dimse.server import DicomServer

    container.settings.remote_ae = [*container.settings.remote_ae, *listed_test_aes()]
    server = DicomServer(container.settings, container.archive, container.audit, container.auth)
    host, port = server.start()
    try:
        yield RunningDicom(host, port, container.settings.ae_title, container)
    finally:
        server.stop()


@pytest.fixture
def dicom_server(container: Container) -> Iterator[RunningDicom]:
    """The real DIMSE server on an ephemeral port, on each database backend."""
    yield from _start_dicom(container)


@pytest.fixture
def sqlite_dicom_server(sqlite_container: Container) -> Iterator[RunningDicom]:
    """The real DIMSE server on an ephemeral port, embedded database."""
    yield from _start_dicom(sqlite_container)
