"""Statements of the store's hot path, compiled once per dialect and run on the driver's cursor.

SQLAlchemy spends 100-200 µs of Python on each ``Connection.execute`` (cache key, execution
context, result object), more than SQLite takes to run the statement; every stored instance
runs seven. A :class:`Prepared` statement is compiled once per dialect, its parameters are put
through the dialect's bind processors (dates become what the dialect stores), and it runs on
the DBAPI cursor of the SQLAlchemy connection, inside its transaction. Only for statements
whose parameters are all given (no Python-side column defaults); errors are translated into
SQLAlchemy's (an ``IntegrityError`` stays one), so callers handle them as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, Select


class Prepared:
    """A Core statement run through the driver (see the module docstring).

    *columns* names the parameters an INSERT is compiled for (its other columns take their
    server defaults).
    """

    def __init__(self, statement: ClauseElement, columns: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.columns = list(columns) if columns is not None else None
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        entry = self._compiled.get(dialect.name)
        if entry is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.columns)
            results: tuple[Any, ...] = ()
            if isinstance(self.statement, Select):  # what the result object would convert
                results = tuple(
                    column.type._cached_result_processor(dialect, None)
                    for column in self.statement.selected_columns
                )
            entry = _Compiled(
                compiled.string,
                # the values of the statement's own binds (the 1 of "num_instances + 1")
                compiled.construct_params({}, _check=False),
                tuple(compiled.positiontup or ()) if compiled.positional else None,
                tuple(compiled._bind_processors.items()),  # as execute does
                results if any(results) else None,
            )
            self._compiled[dialect.name] = entry
        return entry

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        """Execute with *params*; returns the DBAPI cursor (fetch from it, or its lastrowid)."""
        compiled = self._for(conn.dialect)
        values = {**compiled.defaults, **params} if params else dict(compiled.defaults)
        for name, process in compiled.processors:
            if name in values:
                values[name] = process(values[name])
        args: Any = values if compiled.order is None else tuple(values[n] for n in compiled.order)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.sql, args)
        except conn.dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise driver_error(error, compiled.sql, args, conn.dialect) from error
        return cursor

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        """The first row of a SELECT (a tuple, None when there is none), its values converted
        as SQLAlchemy's result would (datetimes from SQLite's text, booleans...)."""
        cursor = self.run(conn, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else self._converted(conn, [row])[0]

    def all(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Every row of a SELECT, as tuples converted like :meth:`first`'s."""
        cursor = self.run(conn, params)
        try:
            rows = cursor.fetchall()
        finally:
            cursor.close()
        return self._converted(conn, rows)

    def _converted(self, conn: Connection, rows: list[Any]) -> list[Any]:
        convert = self._compiled[conn.dialect.name].results
        if convert is None:
            return rows
        return [
            tuple(v if f is None else f(v) for f, v in zip(convert, row, strict=True))
            for row in rows
        ]


def driver_error(error: Exception, statement: str, params: Any, dialect: Dialect) -> Exception:
    """The SQLAlchemy exception for a driver's *error*, as its own execution raises it (an
    ``IntegrityError`` stays one, a lock timeout a retryable ``OperationalError``)."""
    dbapi_error = dialect.loaded_dbapi.Error
    return exc.DBAPIError.instance(statement, params, error, dbapi_error, dialect=dialect)


@dataclass(frozen=True)
class _Compiled:
    sql: str
    defaults: dict[str, Any]
    order: tuple[str, ...] | None  # parameter names in order, for positional drivers
    processors: tuple[tuple[str, Any], ...]
    results: tuple[Any, ...] | None  # a converter (or None) per column of a SELECT


# The INSERT of each table and set of columns, built on first use.
_INSERTS: dict[tuple[Table, tuple[str, ...], bool], Prepared] = {}


def insert_row(
    conn: Connection, table: Table, values: Mapping[str, Any], *, may_conflict: bool = False
) -> int:
    """Insert one row of *table* (its primary key is ``id``) and return its id.

    With *may_conflict*, the insert may fail with ``IntegrityError`` (a unique key that
    another writer took meanwhile) and the caller goes on in the same transaction: it runs in
    a savepoint, except on SQLite, where a failed statement undoes only itself and the write
    lock, held from BEGIN IMMEDIATE, lets no other writer in anyway.
    """
    returning = conn.dialect.name == "postgresql"
    columns = tuple(values)
    statement = _INSERTS.get((table, columns, returning))
    if statement is None:
        insert = table.insert()
        statement = _INSERTS[table, columns, returning] = Prepared(
            insert.returning(table.c.id) if returning else insert, columns
        )
    if may_conflict and conn.dialect.name != "sqlite":
        with conn.begin_nested():
            cursor = statement.run(conn, values)
    else:
        cursor = statement.run(conn, values)
    try:
        return int(cursor.fetchone()[0] if returning else cursor.lastrowid)
    finally:
        cursor.close()
