"""Database fixtures: a real PostgreSQL with pgvector, one schema per test.

``MRL_PG_DSN`` (or ``DATABASE_URL``) names a server to use; otherwise the
embedded server under ``MRL_PG_HOME`` (default ``.mrl-pg``) is started or reused.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mrl_pg.db import configure_connection
from mrl_pg.server import EMBEDDED, resolve_dsn
from mrl_pg.settings import read_environment


def _with_database(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


@pytest.fixture(scope="session")
def server_dsn() -> str:
    """DSN of the server under test (not of the test database)."""
    return resolve_dsn(embedded=True)


@pytest.fixture(scope="session")
def database_dsn(server_dsn: str) -> Iterator[str]:
    """A database for this test session.

    On the embedded server a new one is created and dropped afterwards; on a
    server named by MRL_PG_DSN that database is used, each test in its own schema.
    """
    if read_environment().dsn not in (None, EMBEDDED):
        yield server_dsn
        return
    name = f"mrl_pg_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_database(server_dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield dsn
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture
def schema(database_dsn: str) -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def schema_dsn(database_dsn: str, schema: str) -> str:
    """DSN whose search_path starts with the test's schema (pgvector's types stay visible)."""
    options = conninfo_to_dict(database_dsn).get("options") or ""
    options = f"{options} -c search_path={schema},public".strip()
    return make_conninfo(database_dsn, options=options)


@pytest.fixture
def conn(schema_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection in the test's schema, pgvector types registered."""
    with psycopg.connect(schema_dsn, autocommit=True) as connection:
        configure_connection(connection)
        yield connection


@pytest.fixture
async def aconn(schema_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Async twin of ``conn``."""
    from pgvector.psycopg import register_vector_async

    async with await psycopg.AsyncConnection.connect(schema_dsn, autocommit=True) as connection:
        await register_vector_async(connection)
        yield connection




@pytest.fixture
def fresh_database(server_dsn: str) -> Iterator[str]:
    """A new empty database for tests that own a whole database (migrations)."""
    name = f"mrl_pg_db_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_database(server_dsn, name)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
