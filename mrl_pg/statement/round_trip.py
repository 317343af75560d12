"""How one search is wrapped in a transaction so that it costs one round trip.

A search sends, in one pipeline with a single Sync: the transaction's start
(a SAVEPOINT inside the caller's transaction, BEGIN on a connection that is
not in autocommit; in autocommit the pipeline is itself one implicit
transaction), the settings statement (which reads the table's tuning and
saves the values it replaces in the database), the search statement, then the
end (COMMIT, or putting the saved values back and RELEASE SAVEPOINT). Nothing
comes back to the client between them, so nothing waits for the network in
between. Only a failure costs a second trip, to roll back. The psycopg and ORM front ends drive the
same :class:`Wrapping`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.pq import TransactionStatus

from mrl_pg.errors import DatabaseError
from mrl_pg.statement.query import restore_settings_sql

__all__ = ["Wrapping", "wrapping", "SAVEPOINT_NAME", "SettingsStatement", "driver_begin",
           "with_parameters", "Step", "steps"]

SAVEPOINT_NAME = "mrl_pg_search"
_SAVEPOINT = sql.SQL("SAVEPOINT {}").format(sql.Identifier(SAVEPOINT_NAME))
_RELEASE = sql.SQL("RELEASE SAVEPOINT {}").format(sql.Identifier(SAVEPOINT_NAME))
_ROLLBACK_TO = sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(SAVEPOINT_NAME))


def with_parameters(statement: sql.Composable, params: dict[str, Any] | None) -> sql.SQL:
    """``statement`` as text for psycopg to run with ``params``: every ``%`` doubled but
    those of its own placeholders, since psycopg reads ``%`` anywhere in the text as the
    start of one (a quoted name such as ``"Emb %x"`` would otherwise fail)."""
    text = statement.as_string(None)
    if not params:
        return sql.SQL(text)
    text = text.replace("%", "%%")
    for name in params:
        text = text.replace(f"%%({name})s", f"%({name})s")
    return sql.SQL(text)


@dataclass(frozen=True)
class Step:
    """One statement of the pipeline; ``search`` marks the one whose rows are the result."""

    query: sql.SQL | sql.Composed
    params: dict[str, Any] | None = None
    search: bool = False


def steps(wrap: Wrapping, settings: sql.Composable, settings_params: dict[str, Any] | None,
          statement: sql.Composable | str, params: Any) -> list[Step]:
    """The pipeline of one search, in order: what the sync and async runners both send."""
    search = statement if isinstance(statement, str) else with_parameters(statement, params)
    return [
        *(Step(query) for query in wrap.before),
        Step(with_parameters(settings, settings_params), settings_params),
        Step(sql.SQL(search) if isinstance(search, str) else search, params, search=True),
        *(Step(query) for query in wrap.after),
    ]


@dataclass(frozen=True)
class SettingsStatement:
    """The settings statement of a search: ``statement`` with ``params`` sets ``names``.

    ``without_tuning`` is the same with the default tuning, for a database
    that has no ``mrl_pg_tuning`` table (yet, or any more).
    """

    statement: sql.Composed
    params: dict[str, Any] | None
    names: tuple[str, ...]
    without_tuning: SettingsStatement | None = None


@dataclass(frozen=True)
class Wrapping:
    """Statements sent before and after the search's own, and those that undo a failure."""

    before: tuple[sql.SQL | sql.Composed, ...]
    after: tuple[sql.SQL | sql.Composed, ...]
    undo: tuple[sql.SQL | sql.Composed, ...]
    inside: bool = False
    sends_begin: bool = False

    def undo_after_failure(self, status: TransactionStatus) -> tuple[sql.SQL | sql.Composed, ...]:
        """What to send once the pipeline failed, leaving the connection in ``status``.

        A failure on the client (a parameter psycopg cannot send) still lets the
        statements queued before it run, so the transaction or savepoint opened
        for the search is undone whenever the connection is not idle.
        """
        if self.inside or status != TransactionStatus.IDLE:
            return self.undo
        return ()


def wrapping(
    status: TransactionStatus, *, autocommit: bool, setting_names: Sequence[str],
    begin: bytes | None = None, keep_transaction: bool = False,
) -> Wrapping:
    """The wrapping for a connection in ``status``.

    Inside the caller's transaction: a savepoint, so a failed search leaves
    that transaction usable, and the old settings put back before it is
    released (``set_config(..., true)`` survives ``RELEASE SAVEPOINT``). Outside
    one: a transaction of the search's own, which ends the settings (in autocommit
    the pipeline's implicit transaction, up to its Sync; else BEGIN ... COMMIT). A
    connection that is not in autocommit would open that transaction itself,
    with a Sync of its own (one more round trip): ``begin``, its own BEGIN
    command, is sent in the pipeline instead (:func:`driver_begin`).
    ``keep_transaction`` leaves the transaction so opened to the caller (the
    ORM session's), the search inside a savepoint of it.
    """
    if status == TransactionStatus.INERROR:
        raise DatabaseError(
            "search failed: the connection is in a failed transaction; roll it back first")
    restore = (restore_settings_sql(setting_names),) if setting_names else ()
    inside = Wrapping(before=(_SAVEPOINT,), after=(*restore, _RELEASE),
                      undo=(_ROLLBACK_TO, _RELEASE), inside=True)
    if status != TransactionStatus.IDLE:
        return inside
    if autocommit:
        # What a pipeline sends up to its Sync runs as one implicit transaction: the
        # settings hold for the statement and end with it, and a failure rolls it all back.
        return Wrapping(before=(), after=(), undo=())
    start = sql.SQL(begin.decode() if begin else "BEGIN")
    if keep_transaction:
        return Wrapping(before=(start, *inside.before), after=inside.after, undo=inside.undo,
                        inside=True, sends_begin=True)
    return Wrapping(before=(start,), after=(sql.SQL("COMMIT"),), undo=(sql.SQL("ROLLBACK"),),
                    sends_begin=True)


@contextmanager
def driver_begin(conn: Any, wrap: Wrapping) -> Iterator[None]:
    """While the search is queued, keep psycopg from sending its own BEGIN (and Sync).

    psycopg opens a transaction on a connection that is not in autocommit
    before the first statement, and in a pipeline it syncs right after that
    BEGIN. When ``wrap`` sends the same BEGIN command itself (psycopg's, with
    the connection's isolation level), psycopg is told it is in autocommit for
    that long. This touches psycopg's private state; tests/test_round_trips.py
    fails if a psycopg release changes it.
    """
    if not wrap.sends_begin:
        yield
        return
    conn._autocommit = True
    try:
        yield
    finally:
        conn._autocommit = False


def begin_command(conn: Any) -> bytes:
    """The BEGIN psycopg would send on ``conn`` (isolation level, read only, deferrable)."""
    command: bytes = conn._get_tx_start_command()
    return command
