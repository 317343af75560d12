"""Search settings that travel with a SQLAlchemy statement and end with it.

:func:`mrl_pg.sqlalchemy.search_select` and ``exact_search_select`` mark their
statement and carry its settings as an execution option. These engine-wide
listeners apply them only to statements so marked (eager loads inherit the
options, not the mark): read the current values, set the search's values for
the transaction, run, and put the old values back once the rows are on the
client; in autocommit mode, wrap the statement in a transaction of its own.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from sqlalchemy import Select, event
from sqlalchemy.engine import Connection, Engine, ExceptionContext, ExecutionContext

from mrl_pg.errors import InvalidSearchError
from mrl_pg.schema.tables import render
from mrl_pg.statement.query import RESTORE_SETTINGS_SQL, settings_sql

_SETTINGS_OPTION = "mrl_pg_settings"
# Marks the statement itself: SQLAlchemy hands a statement's execution options on
# to the statements it derives (eager loads), which must run with their own settings.
_MARKER = "/* mrl_pg search */"
_STATE = "_mrl_pg_settings_state"

_S = TypeVar("_S", bound=Select[Any])


def _with_settings(statement: _S, settings: list[tuple[str, str]]) -> _S:
    return statement.prefix_with(_MARKER).execution_options(
        **{_SETTINGS_OPTION: tuple(settings)}
    )


def _settings_of(
    context: ExecutionContext | None, statement: str
) -> tuple[tuple[str, str], ...] | None:
    if context is None or _MARKER not in statement:
        return None
    settings: tuple[tuple[str, str], ...] | None = context.execution_options.get(
        _SETTINGS_OPTION)
    return settings or None


def _run_plain(connection: Connection, statement: sql.Composable,
               params: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
    """Run SQL on the same DBAPI connection, on a cursor of its own (the search's rows stay)."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(render(statement), params)
        return cursor.fetchone() if cursor.description else None
    finally:
        cursor.close()


def _driver(connection: Connection) -> psycopg.Connection[Any] | psycopg.AsyncConnection[Any]:
    driver = connection.connection.driver_connection
    if not isinstance(driver, psycopg.Connection | psycopg.AsyncConnection):
        raise InvalidSearchError(
            "mrl_pg searches need the psycopg 3 driver (postgresql+psycopg://, or "
            f"mrl_pg.create_engine), got {type(driver).__name__}"
        )
    return driver


@event.listens_for(Engine, "before_cursor_execute")
def _apply_settings(
    connection: Connection, cursor: Any, statement: str, parameters: Any,
    context: ExecutionContext | None, executemany: bool,
) -> None:
    settings = _settings_of(context, statement)
    if settings is None:
        return
    if context is not None and context.execution_options.get("stream_results"):
        raise InvalidSearchError("a search cannot stream its results (stream_results/yield_per)")
    driver = _driver(connection)
    own = driver.autocommit and driver.info.transaction_status == TransactionStatus.IDLE
    if own:  # autocommit: a transaction of our own, which takes the settings away as it ends
        _run_plain(connection, sql.SQL("BEGIN"))
    try:
        old = _run_plain(connection, settings_sql(list(settings)))
    except BaseException:
        if own:  # never leave an autocommit connection inside a failed transaction
            _rollback_quietly(connection)
        raise
    names = [name for name, _ in settings]
    state = {"own": own, "names": names, "old": list(old[: len(names)]) if old else []}
    setattr(context, _STATE, state)


def _rollback_quietly(connection: Connection) -> None:
    try:
        _run_plain(connection, sql.SQL("ROLLBACK"))
    except Exception:  # the error that brought us here is the one to report
        pass


def _undo_settings(connection: Connection, context: ExecutionContext | None, *,
                   failed: bool) -> None:
    state = getattr(context, _STATE, None)
    if state is None:
        return
    delattr(context, _STATE)
    if state["own"]:
        _run_plain(connection, sql.SQL("ROLLBACK" if failed else "COMMIT"))
        return
    if _driver(connection).info.transaction_status == TransactionStatus.INERROR:
        return  # the server aborted the caller's transaction: its rollback undoes them
    _run_plain(connection, RESTORE_SETTINGS_SQL, {"names": state["names"], "old": state["old"]})


@event.listens_for(Engine, "after_cursor_execute")
def _restore_settings(
    connection: Connection, cursor: Any, statement: str, parameters: Any,
    context: ExecutionContext | None, executemany: bool,
) -> None:
    # The rows are already on the client (never a server-side cursor, see above).
    _undo_settings(connection, context, failed=False)


@event.listens_for(Engine, "handle_error")
def _restore_settings_after_error(exception_context: ExceptionContext) -> None:
    # Also for errors raised by the driver before the statement reached the server
    # (a NUL byte in a parameter): the caller's transaction is intact then.
    connection = exception_context.connection
    if connection is None or exception_context.is_disconnect:
        return
    try:
        _undo_settings(connection, exception_context.execution_context, failed=True)
    except Exception:  # the original error is the one to report
        pass
