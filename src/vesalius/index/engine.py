"""One engine per process, and the sessions the services use.

SQLite is tuned for a server: WAL journal, ``synchronous=NORMAL`` by default (the log is
flushed in the background, and a power cut loses nothing acknowledged: see
:mod:`vesalius.index.durability`) or ``FULL`` (a flush per commit), a busy timeout,
case-sensitive LIKE (DICOM matching is case-sensitive unless folded columns are used), foreign
keys, and ``BEGIN IMMEDIATE`` for write transactions so two writers queue instead of failing on
a lock upgrade.
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from vesalius.index.durability import IndexLog
from vesalius.index.prepared import driver_error

_WRITE_OPTION = "vesalius_write"
T = TypeVar("T")


def make_engine(url: str, sqlite_synchronous: str = "normal", **kwargs: Any) -> Engine:
    """Create the engine for an index URL, with the per-dialect settings Vesalius relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # LIFO: the connection used last is taken again, so its page cache stays warm and
        # a quiet archive uses one or two connections rather than cycling through five.
        if parsed.database and parsed.database != ":memory:":
            kwargs.setdefault("pool_use_lifo", True)  # (a memory database has no queue pool)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 60}, **kwargs
        )
        _tune_sqlite(engine, sqlite_synchronous)
        return engine
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        url = parsed.set(query=query).render_as_string(hide_password=False)
        # REPEATABLE READ (InnoDB's default) takes gap locks on concurrent inserts and hides
        # rows another association has just committed; READ COMMITTED behaves like PostgreSQL.
        kwargs.setdefault("isolation_level", "READ COMMITTED")
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


# Errors after which a write transaction can simply be run again: deadlocks, lock timeouts
# and serialisation failures (MySQL/MariaDB error numbers, PostgreSQL SQLSTATEs).
_RETRYABLE_MYSQL = {1213, 1205}
_RETRYABLE_PG = {"40P01", "40001", "55P03"}


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed transaction may succeed when run again."""
    if not isinstance(exc, OperationalError | DBAPIError):
        return False
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _RETRYABLE_MYSQL:
        return True
    return getattr(orig, "sqlstate", None) in _RETRYABLE_PG


def _tune_sqlite(engine: Engine, synchronous: str) -> None:
    if synchronous.upper() not in ("NORMAL", "FULL"):
        raise ValueError(f"sqlite_synchronous must be normal or full, not {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            f"synchronous={synchronous.upper()}",
            "busy_timeout=60000",
            "foreign_keys=ON",
            "case_sensitive_like=ON",
            # Reads through a memory map instead of a pread() per page: profiling the store
            # path found ~20 page re-reads per stored instance. Address space, not memory.
            "mmap_size=1073741824",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        # On the driver's connection: through exec_driver_sql, SQLAlchemy's execution
        # machinery cost more than the rest of opening a read transaction together.
        try:
            connection.connection.dbapi_connection.execute(statement)
        except connection.dialect.loaded_dbapi.Error as error:
            raise driver_error(error, statement, None, connection.dialect) from error


class Database:
    """The engine and the two kinds of session: read and write.

    Examples
    --------
    >>> db = Database("sqlite://")
    >>> with db.read() as session:
    ...     session.execute(text("select 1")).scalar()  # doctest: +SKIP
    """

    def __init__(
        self, url: str, *, sqlite_synchronous: str = "normal", flush_interval: float = 1.0
    ) -> None:
        self.url = url
        self.engine = make_engine(url, sqlite_synchronous)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # The log a power cut could lose the tail of (see vesalius.index.durability).
        self.log: IndexLog | None = None
        database = self.engine.url.database
        lazy = self.is_sqlite and sqlite_synchronous.lower() == "normal"
        if lazy and database and database != ":memory:":
            self.log = IndexLog(Path(database).resolve(), flush_interval)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        writing = self.engine.execution_options(**{_WRITE_OPTION: True})  # BEGIN IMMEDIATE
        self._write = sessionmaker(writing, expire_on_commit=False)
        # SQLite has one writer at a time; queue ours in-process rather than on the file lock.
        self._sqlite_write_lock = threading.Lock() if self.is_sqlite else None
        self._writers: WriterLock | None = None
        self._held: HeldWriter | None = None
        if self.is_sqlite and database and database != ":memory:":
            self._writers = WriterLock(Path(f"{Path(database).resolve()}-writer.lock"))
            self._held = HeldWriter(writing)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries; rolled back at the end."""
        with self._read() as session:
            yield session

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Session]:
        """A session whose work is committed when the block ends without error.

        The commit is on the disk when the block ends. Only the store pipeline passes
        ``durable=False``: start-up mends what a power cut leaves of its rows and files (see
        :mod:`vesalius.index.durability`).
        """
        lock = self._sqlite_write_lock
        if lock is not None:
            lock.acquire()
        if self._writers is not None:
            self._writers.acquire()
        try:
            if self._held is not None:  # under the write lock: one writer at a time
                with self._held.transaction() as session:
                    yield session
            else:
                with self._write() as session, session.begin():
                    yield session
            if self.log is not None:
                self.log.note_commit()
                if durable:
                    self.log.flush(record=False)
        finally:
            if self._writers is not None:
                self._writers.release()
            if lock is not None:
                lock.release()

    def run_write(
        self, work: Callable[[Session], T], attempts: int = 5, *, durable: bool = True
    ) -> T:
        """Run *work* in a write transaction, again after a deadlock or lock timeout."""
        for attempt in range(1, attempts + 1):
            try:
                with self.write(durable=durable) as session:
                    return work(session)
            except DBAPIError as exc:
                if attempt == attempts or not is_retryable(exc):
                    raise
                time.sleep(random.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        if self.log is not None:
            self.log.stop()
        if self._held is not None:
            self._held.close()
        if self._writers is not None:
            self._writers.close()
        self.engine.dispose()


class HeldWriter:
    """One write connection kept open, and one session bound to it, for the writers of a
    database that take turns on a lock (the embedded index: :attr:`Database._sqlite_write_lock`).

    A write transaction through the pool, a new ``Session`` and its ``begin()`` cost 240 µs
    of CPU for a stored instance's rows here, and 160 µs on this connection and session: the
    pool's checkout and reset, the session's construction and its transaction's state machine
    went, SQLite's work stayed. The session joins the connection's transaction
    (``conditional_savepoint``): savepoints work as before, and the commit is the
    connection's. A connection in doubt after a failure is closed, and the next transaction
    opens another; so is one inherited by a forked process.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._session: Session | None = None
        self._pid = 0

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """The session, in a transaction committed when the block ends without error (the
        caller holds the write lock)."""
        conn, session = self._conn, self._session
        if conn is None or session is None or self._pid != os.getpid():
            conn = self._conn = self.engine.connect()
            session = self._session = Session(
                bind=conn, expire_on_commit=False, join_transaction_mode="conditional_savepoint"
            )
            self._pid = os.getpid()
        session.info.clear()
        try:
            with conn.begin():
                yield session
                session.flush()  # what the block added (Session.commit would have flushed it)
        except BaseException:
            if conn.invalidated or conn.in_transaction():  # its rollback failed: not kept
                self.close()
            raise
        finally:
            if self._session is session:
                session.close()  # the objects it loaded are detached, as a closed session's

    def close(self) -> None:
        conn, session, self._conn, self._session = self._conn, self._session, None, None
        if session is not None:
            session.close()
        if conn is not None and self._pid == os.getpid():
            conn.close()


class WriterLock:
    """The SQLite writers of every process on one ``flock``, beside the database file.

    SQLite lets one writer in at a time and makes the others poll: its busy handler sleeps
    1, 2, 5, 10... ms between tries, so with several processes storing at once (``serve``
    with ``workers`` > 1, an import beside the server) most of their time went into those
    sleeps. A blocked ``flock`` is woken by the kernel the moment the holder lets go. Taken
    after the in-process lock, so one process holds it for one thread at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
