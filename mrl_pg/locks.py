"""Saying who holds the lock a statement gave up waiting for (``lock_timeout``)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from mrl_pg.config import TableConfig
from mrl_pg.errors import LockTimeoutError

__all__ = ["lock_error", "lock_holders"]


def lock_error(
    what: str, conn: psycopg.Connection[Any] | None, config: TableConfig | None,
    *, open_transactions: bool = False, why: str = "another transaction is writing these rows "
    "or altering the table",
) -> LockTimeoutError:
    """A :class:`LockTimeoutError` for ``what`` naming the setting and the holders."""
    holders = (lock_holders(conn, config, open_transactions=open_transactions)
               if conn is not None and config else [])
    setting = _setting(conn, "lock_timeout") if conn is not None else None
    table = config.qualified_name if config else "the table"
    error = LockTimeoutError(
        f"{what}: gave up waiting for a lock on {table}"
        + (f" after lock_timeout = {setting}" if setting else "")
        + (f"; held by {'; '.join(holders)}" if holders else "")
        + f" ({why})",
        holders=holders,
    )
    error.what = what
    return error


def _setting(conn: psycopg.Connection[Any], name: str) -> str | None:
    if conn.info.transaction_status != TransactionStatus.IDLE:
        return None
    try:
        row = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row and row[0] else None


def lock_holders(
    conn: psycopg.Connection[Any], config: TableConfig, *, open_transactions: bool = False
) -> list[str]:
    """Other sessions holding a granted lock on the table (read once the wait has failed);
    with ``open_transactions``, also every session of the database inside a transaction
    (what ``CREATE INDEX CONCURRENTLY`` waits for)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        return []  # the caller's failed transaction cannot run a query
    try:
        rows = conn.execute(
            """SELECT a.pid, a.state, left(regexp_replace(a.query, '[[:space:]]+', ' ', 'g'), 80)
               FROM pg_stat_activity a
               WHERE a.pid <> pg_backend_pid() AND (a.pid IN (
                   SELECT l.pid FROM pg_locks l
                   WHERE l.granted AND l.relation = to_regclass(%s))
                 OR (%s AND a.datname = current_database() AND a.xact_start IS NOT NULL))
               ORDER BY a.pid""",
            (config.table.as_string(conn), open_transactions),
        ).fetchall()
    except psycopg.Error:
        return []
    return [f"pid {pid} ({state}): {query}" for pid, state, query in rows]
