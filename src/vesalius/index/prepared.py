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

from sqlalchemy import Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement


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
            entry = _Compiled(
                compiled.string,
                # the values of the statement's own binds (the 1 of "num_instances + 1")
                compiled.construct_params({}, _check=False),
                tuple(compiled.positiontup or ()) if compiled.positional else None,
                tuple(compiled._bind_processors.items()),  # as execute does
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
            raise exc.DBAPIError.instance(
                compiled.sql, args, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
            ) from error
        return cursor


@dataclass(frozen=True)
class _Compiled:
    sql: str
    defaults: dict[str, Any]
    order: tuple[str, ...] | None  # parameter names in order, for positional drivers
    processors: tuple[tuple[str, Any], ...]
