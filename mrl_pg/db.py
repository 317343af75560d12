"""Connections: psycopg with pgvector's types registered, and the SQLAlchemy URL."""

from __future__ import annotations

from typing import Any

import psycopg
from pgvector.psycopg import register_vector, register_vector_async
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import URL

from .errors import DatabaseError
from .server import resolve_dsn

__all__ = ["connect", "connect_async", "sqlalchemy_url", "configure_connection"]


def configure_connection(conn: psycopg.Connection[Any]) -> None:
    """Register pgvector's ``vector``/``halfvec`` adapters; the extension must exist."""
    register_vector(conn)


def connect(dsn: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection to ``dsn`` (default: :func:`resolve_dsn`) with pgvector types registered.

    Creates the ``vector`` extension first when it is missing, since the types
    cannot be registered without it.
    """
    try:
        conn = psycopg.connect(dsn or resolve_dsn(), **kwargs)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"could not connect to PostgreSQL: {_first_line(exc)}") from exc
    try:
        _ensure_extension(conn)
        register_vector(conn)
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
        async with conn.cursor() as cur:
            await cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
            if await cur.fetchone() is None:
                await cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
                await conn.commit()
        await register_vector_async(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _ensure_extension(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    if not conn.autocommit:
        conn.commit()


def sqlalchemy_url(dsn: str) -> str:
    """Any libpq DSN (URL or ``key=value``) as a SQLAlchemy URL for the psycopg 3 driver.

    The same URL serves sync engines and ``create_async_engine``.
    """
    params: dict[str, Any] = dict(conninfo_to_dict(dsn))
    host = params.pop("host", None)
    port = params.pop("port", None)
    query = {k: str(v) for k, v in params.items() if k not in ("user", "password", "dbname")}
    url = URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        password=params.get("password") or None,
        host=None if host is None or str(host).startswith("/") else str(host),
        port=int(port) if port else None,
        database=params.get("dbname"),
        query=query | ({"host": str(host)} if host and str(host).startswith("/") else {}),
    )
    return url.render_as_string(hide_password=False)
