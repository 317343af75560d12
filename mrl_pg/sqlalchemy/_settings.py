"""Search settings that travel with a SQLAlchemy statement and end with it.

:func:`mrl_pg.sqlalchemy.search_select` and ``exact_search_select`` mark their
statement and carry its settings statement as an execution option. An
engine-wide ``do_execute`` listener runs only statements so marked (eager
loads inherit the options, not the mark) the way the psycopg front end does
(:mod:`mrl_pg.statement.round_trip`): BEGIN or a savepoint, the settings
(the table's tuning read in the database), the statement, and COMMIT or the
old settings put back, in one pipeline with one Sync: one round trip.
"""

from __future__ import annotations

import collections
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Select, event
from sqlalchemy.engine import Engine, ExecutionContext
from sqlalchemy.util import await_only

from mrl_pg.errors import InvalidSearchError
from mrl_pg.statement.round_trip import (
    SettingsStatement,
    begin_command,
    driver_begin,
    wrapping,
)
from mrl_pg.statement.tuning import TUNING_TABLE

_SETTINGS_OPTION = "mrl_pg_settings"
# Marks the statement itself: SQLAlchemy hands a statement's execution options on
# to the statements it derives (eager loads), which must run with their own settings.
_MARKER = "/* mrl_pg search */"

_S = TypeVar("_S", bound=Select[Any])


def _with_settings(statement: _S, settings: SettingsStatement) -> _S:
    return statement.prefix_with(_MARKER).execution_options(**{_SETTINGS_OPTION: settings})


def _settings_of(context: ExecutionContext | None, statement: str) -> SettingsStatement | None:
    if context is None or _MARKER not in statement:
        return None
    settings = context.execution_options.get(_SETTINGS_OPTION)
    return settings if isinstance(settings, SettingsStatement) else None


def _missing_tuning(exc: BaseException) -> bool:
    return isinstance(exc, psycopg.errors.UndefinedTable) and TUNING_TABLE in str(exc)


def _run_sync(cursor: psycopg.Cursor[Any], statement: str, parameters: Any,
              settings: SettingsStatement) -> None:
    conn = cursor.connection
    wrap = wrapping(conn.info.transaction_status, autocommit=conn.autocommit,
                    setting_names=settings.names, begin=begin_command(conn),
                    keep_transaction=True)
    try:
        with driver_begin(conn, wrap), conn.pipeline():
            for step in wrap.before:
                conn.execute(step, prepare=False)
            conn.execute(settings.statement, settings.params, prepare=False)
            cursor.execute(statement, parameters, prepare=False)
            for step in wrap.after:
                conn.execute(step, prepare=False)
    except psycopg.Error:
        for step in wrap.undo_after_failure(conn.info.transaction_status):
            conn.execute(step, prepare=False)
        raise


async def _run_async(adapted: Any, statement: str, parameters: Any,
                     settings: SettingsStatement) -> None:
    cursor: psycopg.AsyncCursor[Any] = adapted._cursor
    conn = cursor.connection
    wrap = wrapping(conn.info.transaction_status, autocommit=conn.autocommit,
                    setting_names=settings.names, begin=begin_command(conn),
                    keep_transaction=True)
    try:
        with driver_begin(conn, wrap):
            async with conn.pipeline():
                for step in wrap.before:
                    await conn.execute(step, prepare=False)
                await conn.execute(settings.statement, settings.params, prepare=False)
                await cursor.execute(statement, parameters, prepare=False)
                for step in wrap.after:
                    await conn.execute(step, prepare=False)
    except psycopg.Error:
        for step in wrap.undo_after_failure(conn.info.transaction_status):
            await conn.execute(step, prepare=False)
        raise
    # SQLAlchemy's async cursor serves rows from its own buffer, filled on execute.
    adapted._rows = collections.deque(await cursor.fetchall() if cursor.description else [])


def _run(cursor: Any, statement: str, parameters: Any, settings: SettingsStatement) -> None:
    if isinstance(cursor, psycopg.Cursor):
        _run_sync(cursor, statement, parameters, settings)
    elif isinstance(getattr(cursor, "_cursor", None), psycopg.AsyncCursor):
        await_only(_run_async(cursor, statement, parameters, settings))
    else:
        raise InvalidSearchError(
            "mrl_pg searches need the psycopg 3 driver (postgresql+psycopg://, or "
            f"mrl_pg.create_engine), got a {type(cursor).__name__} cursor")


@event.listens_for(Engine, "do_execute")
def _execute_search(cursor: Any, statement: str, parameters: Any,
                    context: ExecutionContext) -> bool | None:
    settings = _settings_of(context, statement)
    if settings is None:
        return None
    if context.execution_options.get("stream_results"):
        raise InvalidSearchError("a search cannot stream its results (stream_results/yield_per)")
    try:
        _run(cursor, statement, parameters, settings)
    except psycopg.Error as exc:
        if settings.without_tuning is None or not _missing_tuning(exc):
            raise
        _run(cursor, statement, parameters, settings.without_tuning)
    return True
