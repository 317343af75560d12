"""Every sync/async pair has the same signature and behaves the same.

The async code and its sync twin are written side by side (as pgvector-python
does); these tests keep them from drifting apart, which they once did:
``connect_async`` returned a connection inside a transaction, and no async
``configure`` existed for ``AsyncConnectionPool``.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import mrl_pg
import mrl_pg.db
import mrl_pg.embeddings
import mrl_pg.psycopg
import mrl_pg.sqlalchemy
from mrl_pg.db import configure_connection, configure_connection_async, connect, connect_async

MODULES = [mrl_pg, mrl_pg.db, mrl_pg.psycopg, mrl_pg.sqlalchemy]
CLASSES = [(mrl_pg.embeddings.EmbeddingClient, mrl_pg.embeddings.AsyncEmbeddingClient)]
# Parameters whose type differs by design: the connection or session, nothing else.
CONNECTION_PARAMETERS = {"conn", "session"}


def _pairs(module: ModuleType) -> list[tuple[str, Any, Any]]:
    names = getattr(module, "__all__", [])
    return [
        (name, getattr(module, name.removesuffix("_async")), getattr(module, name))
        for name in names
        if name.endswith("_async")
    ]


def _shape(function: Any) -> list[tuple[str, Any, Any, str]]:
    return [
        (p.name, p.kind, p.default,
         "" if p.name in CONNECTION_PARAMETERS else str(p.annotation))
        for p in inspect.signature(function).parameters.values()
    ]


def _every_pair() -> list[tuple[str, Any, Any]]:
    pairs = [(f"{m.__name__}.{n}", s, a) for m in MODULES for n, s, a in _pairs(m)]
    for sync_class, async_class in CLASSES:
        for name, member in vars(async_class).items():
            if inspect.iscoroutinefunction(member) and not name.startswith("_"):
                twin = "close" if name == "aclose" else name
                pairs.append((f"{async_class.__name__}.{name}",
                              getattr(sync_class, twin), member))
    return pairs


def test_every_async_function_in_the_public_api_has_a_sync_twin():
    pairs = _every_pair()
    assert len(pairs) >= 10
    for label, sync, async_ in pairs:
        assert inspect.iscoroutinefunction(async_), label
        assert not inspect.iscoroutinefunction(sync), label


@pytest.mark.parametrize(("label", "sync", "async_"), _every_pair(), ids=lambda x: str(x)[:60])
def test_each_twin_takes_the_same_parameters(label, sync, async_):
    assert _shape(sync) == _shape(async_), label


@pytest.mark.parametrize("autocommit", [False, True])
async def test_connect_and_connect_async_hand_back_an_idle_connection(database_dsn, autocommit):
    with connect(database_dsn, autocommit=autocommit) as conn:
        sync_status = conn.info.transaction_status
        sync_types = conn.adapters.types.get("vector") is not None
    aconn = await connect_async(database_dsn, autocommit=autocommit)
    try:
        assert (aconn.info.transaction_status, aconn.adapters.types.get("vector") is not None) \
            == (sync_status, sync_types) == (TransactionStatus.IDLE, True)
    finally:
        await aconn.close()


async def test_both_pools_configure_connections_and_serve_the_same_search(corpus):
    query = corpus.queries[3]
    with ConnectionPool(corpus.dsn, configure=configure_connection, min_size=1, max_size=1,
                        open=True, timeout=10) as pool:
        with pool.connection() as conn:
            assert conn.info.transaction_status == TransactionStatus.IDLE
            sync_ids = [r.id for r in mrl_pg.search(conn, corpus.config, query, k=10)]
        assert pool.get_stats().get("connections_errors", 0) == 0
    async with AsyncConnectionPool(corpus.dsn, configure=configure_connection_async,
                                   min_size=1, max_size=1, open=False, timeout=10) as apool:
        async with apool.connection() as aconn:
            assert aconn.info.transaction_status == TransactionStatus.IDLE
            async_ids = [r.id for r in await mrl_pg.search_async(aconn, corpus.config, query,
                                                                 k=10)]
        assert apool.get_stats().get("connections_errors", 0) == 0
    assert async_ids == sync_ids and len(sync_ids) == 10


async def test_both_configure_functions_refuse_a_database_without_pgvector(fresh_database):
    with psycopg.connect(fresh_database) as conn:
        with pytest.raises(mrl_pg.PgvectorVersionError, match="not installed") as sync_error:
            configure_connection(conn)
        assert conn.info.transaction_status == TransactionStatus.IDLE
    async with await psycopg.AsyncConnection.connect(fresh_database) as aconn:
        with pytest.raises(mrl_pg.PgvectorVersionError, match="not installed") as async_error:
            await configure_connection_async(aconn)
        assert aconn.info.transaction_status == TransactionStatus.IDLE
    assert str(sync_error.value) == str(async_error.value)
