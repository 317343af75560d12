"""Connections: psycopg with pgvector's types registered, and SQLAlchemy engines built on them.

Connecting never creates anything: the ``vector`` extension comes from
``mrl-pg migrate`` or the install script, so a read-only role can connect.
Each pair here (``connect``/``connect_async``, ``configure_connection``/
``configure_connection_async``, ``create_engine``/``create_async_engine``)
behaves the same; tests/test_twins.py checks every pair.

Pools register the types through ``configure``::

    ConnectionPool(dsn, configure=mrl_pg.db.configure_connection)
    AsyncConnectionPool(dsn, configure=mrl_pg.db.configure_connection_async)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy as sa
from pgvector.psycopg import register_vector, register_vector_async
from psycopg.pq import TransactionStatus

from mrl_pg.errors import DatabaseError
from mrl_pg.schema.compat import PGVECTOR_VERSION_SQL, require_pgvector
from mrl_pg.server import resolve_dsn

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio needs greenlet; sync users need not install it
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "connect",
    "connect_async",
    "configure_connection",
    "configure_connection_async",
    "create_engine",
    "create_async_engine",
]

# SQLAlchemy picks its dialect from this; the connections come from connect().
_SQLALCHEMY_URL = "postgresql+psycopg://"


def configure_connection(conn: psycopg.Connection[Any]) -> None:
    """Check pgvector (>= 0.8) and register its ``vector``/``halfvec`` adapters.

    Leaves the connection as it found it: a connection that was idle outside a
    transaction is idle again afterwards (what ``psycopg_pool`` requires of ``configure``).
    """
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    try:
        row = conn.execute(PGVECTOR_VERSION_SQL).fetchone()
        require_pgvector(row[0] if row else None, database=conn.info.dbname)
        register_vector(conn)
    finally:
        if idle and conn.info.transaction_status != TransactionStatus.IDLE:
            conn.rollback()


async def configure_connection_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """Async twin of :func:`configure_connection`, for ``AsyncConnectionPool(configure=...)``."""
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    try:
        cursor = await conn.execute(PGVECTOR_VERSION_SQL)
        row = await cursor.fetchone()
        require_pgvector(row[0] if row else None, database=conn.info.dbname)
        await register_vector_async(conn)
    finally:
        if idle and conn.info.transaction_status != TransactionStatus.IDLE:
            await conn.rollback()


def connect(dsn: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection to ``dsn`` (default: :func:`~mrl_pg.server.resolve_dsn`), types registered.

    ``kwargs`` go to :func:`psycopg.connect` (``autocommit=True``, ...). Raises
    :class:`~mrl_pg.errors.PgvectorVersionError` when pgvector is missing or older than 0.8.
    """
    try:
        conn = psycopg.connect(dsn or resolve_dsn(), **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"could not connect to PostgreSQL: {_first_line(exc)}") from exc
    try:
        configure_connection(conn)
    except BaseException:
        conn.close()
        raise
    return conn


async def connect_async(dsn: str | None = None, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """Async twin of :func:`connect`."""
    try:
        conn = await psycopg.AsyncConnection.connect(dsn or resolve_dsn(), **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"could not connect to PostgreSQL: {_first_line(exc)}") from exc
    try:
        await configure_connection_async(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


def create_engine(dsn: str | None = None, **kwargs: Any) -> sa.Engine:
    """A SQLAlchemy engine (psycopg 3 driver) whose connections come from :func:`connect`.

    Any libpq DSN works, multi-host and ``key=value`` forms included, and every
    pooled connection has pgvector's types registered. ``kwargs`` go to
    :func:`sqlalchemy.create_engine` (``poolclass``, ``echo``, ...).
    """
    target = dsn or resolve_dsn()
    return sa.create_engine(_SQLALCHEMY_URL, creator=lambda: connect(target), **kwargs)


def create_async_engine(dsn: str | None = None, **kwargs: Any) -> AsyncEngine:
    """Async twin of :func:`create_engine` (needs ``greenlet``, as SQLAlchemy's asyncio does)."""
    from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

    target = dsn or resolve_dsn()

    async def creator() -> psycopg.AsyncConnection[Any]:
        return await connect_async(target)

    return _create_async_engine(_SQLALCHEMY_URL, async_creator=creator, **kwargs)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
