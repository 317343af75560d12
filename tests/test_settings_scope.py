"""No setting a search makes outlives it, in any mode, on every front end.

The trap: inside a caller's transaction ``set_config(..., true)`` made in a
savepoint survives ``RELEASE SAVEPOINT``; an exact search then left
``enable_indexscan = off`` behind and the next adaptive search in the same
transaction became a sequential scan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import DeclarativeBase, Session

import mrl_pg.sqlalchemy
from mrl_pg import exact_search, exact_search_async, explain, search, search_async
from mrl_pg.db import configure_connection, configure_connection_async, create_engine
from mrl_pg.errors import DatabaseError
from mrl_pg.sqlalchemy._search import exact_search as orm_exact_search
from mrl_pg.sqlalchemy._search import mrl_mixin
from mrl_pg.sqlalchemy._search import search as orm_search
from mrl_pg.statement.query import EXACT_SETTINGS, SearchParams, scan_settings
from tests.planinfo import index_scans, nodes

NAMES = sorted({name for name, _ in scan_settings(SearchParams()) + EXACT_SETTINGS})
SNAPSHOT = "SELECT " + ", ".join(f"current_setting('{n}', true)" for n in NAMES)
# pgvector's settings exist once its library is loaded (by the first vector value).
LOAD_PGVECTOR = "SELECT '[1]'::vector"
# What a caller may have set for its own transaction before searching.
CALLER_SETTINGS = ["SET LOCAL hnsw.ef_search = 77", "SET LOCAL enable_seqscan = on"]


def snapshot(conn: psycopg.Connection[Any], *, end_transaction: bool = False) -> dict[str, str]:
    conn.execute(LOAD_PGVECTOR)
    row = conn.execute(SNAPSHOT).fetchone()
    assert row is not None
    if end_transaction:  # leave the connection idle, as the caller had it
        conn.commit()
    return dict(zip(NAMES, row, strict=True))


def uses_hnsw(conn: psycopg.Connection[Any], corpus: Any) -> bool:
    plan = explain(conn, corpus.config, corpus.queries[1], as_json=True, analyze=True)
    # The exact scan that stands in for a short walk is planned, and must not run.
    return bool(index_scans(plan, corpus.config.hnsw_index_name)) and not any(
        n["Node Type"] == "Seq Scan" and n["Actual Loops"] for n in nodes(plan)
    )


def _autocommit(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    configure_connection(conn)
    return conn


def _transactional(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn)
    configure_connection(conn)
    return conn


MODES: dict[str, tuple[Callable[[str], psycopg.Connection[Any]], bool]] = {
    "autocommit": (_autocommit, False),
    "idle, not autocommit": (_transactional, False),
    "inside the caller's transaction": (_transactional, True),
    "inside conn.transaction() on autocommit": (_autocommit, True),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_settings_are_back_after_exact_then_adaptive_search_and_the_index_is_used(corpus, mode):
    open_conn, in_transaction = MODES[mode]
    with open_conn(corpus.dsn) as conn:
        if in_transaction:
            if conn.autocommit:
                conn.execute("BEGIN")
            for statement in CALLER_SETTINGS:
                conn.execute(statement)
        idle = not in_transaction and not conn.autocommit
        before = snapshot(conn, end_transaction=idle)
        assert exact_search(conn, corpus.config, corpus.queries[0], k=5)
        assert conn.info.transaction_status == (
            psycopg.pq.TransactionStatus.INTRANS if in_transaction
            else psycopg.pq.TransactionStatus.IDLE)
        assert snapshot(conn, end_transaction=idle) == before
        assert uses_hnsw(conn, corpus)
        assert len(search(conn, corpus.config, corpus.queries[0], k=100)) == 100
        assert snapshot(conn, end_transaction=idle) == before
        if in_transaction:
            assert before["hnsw.ef_search"] == "77"
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            conn.rollback() if not conn.autocommit else conn.execute("ROLLBACK")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_first_search_in_a_new_transaction_puts_pgvector_defaults_back(corpus):
    """pgvector's settings do not exist before its library loads; they go back to defaults."""
    with _transactional(corpus.dsn) as conn:
        # Inside a transaction (this statement opens it), before pgvector's library loads.
        assert conn.execute("SELECT current_setting('hnsw.ef_search', true)").fetchone() == (
            None,)
        search(conn, corpus.config, corpus.queries[0], k=50)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("40",)
        assert conn.execute("SHOW hnsw.iterative_scan").fetchone() == ("off",)


def test_a_failed_search_inside_a_transaction_leaves_it_usable_with_its_settings(corpus):
    with _transactional(corpus.dsn) as conn:
        conn.execute(CALLER_SETTINGS[0])
        before = snapshot(conn)
        with pytest.raises(Exception, match="search failed"):
            search(conn, corpus.config.__class__("no_such_table", schema=corpus.config.schema),
                   corpus.queries[0])
        assert snapshot(conn) == before


@pytest.mark.parametrize("in_transaction", [False, True])
async def test_async_searches_leave_settings_as_they_were(corpus, in_transaction):
    connect = psycopg.AsyncConnection.connect
    async with await connect(corpus.dsn, autocommit=not in_transaction) as conn:
        await configure_connection_async(conn)
        if in_transaction:
            await conn.execute(CALLER_SETTINGS[0])
        await conn.execute(LOAD_PGVECTOR)
        before = await (await conn.execute(SNAPSHOT)).fetchone()
        assert await exact_search_async(conn, corpus.config, corpus.queries[0], k=5)
        assert len(await search_async(conn, corpus.config, corpus.queries[0], k=100)) == 100
        after = await (await conn.execute(SNAPSHOT)).fetchone()
        assert after == before
        expected = psycopg.pq.TransactionStatus.INTRANS if in_transaction else (
            psycopg.pq.TransactionStatus.IDLE)
        assert conn.info.transaction_status == expected


class Base(DeclarativeBase):
    pass


@pytest.fixture(scope="module")
def orm_model(corpus):
    class Document(mrl_mixin(corpus.config), Base):
        pass

    return Document


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "AUTOCOMMIT"])
def test_orm_session_searches_leave_settings_as_they_were_and_use_the_index(
    corpus, orm_model, isolation
):
    engine = create_engine(corpus.dsn, execution_options={"isolation_level": isolation})
    try:
        with Session(engine) as session:
            if isolation != "AUTOCOMMIT":
                session.execute(text(CALLER_SETTINGS[0]))
            session.execute(text(LOAD_PGVECTOR))
            before = session.execute(text(SNAPSHOT)).one()
            assert orm_exact_search(session, orm_model, corpus.queries[0], k=5)
            assert session.execute(text(SNAPSHOT)).one() == before
            rows = orm_search(session, orm_model, corpus.queries[0], k=100)
            assert len(rows) == 100
            assert session.execute(text(SNAPSHOT)).one() == before
            # The connection under the session still plans the adaptive search on HNSW.
            raw = session.connection().connection.driver_connection
            assert uses_hnsw(raw, corpus)
    finally:
        engine.dispose()


def test_an_orm_search_failing_in_the_driver_leaves_the_transaction_with_its_settings(
    corpus, orm_model
):
    """psycopg refuses a NUL byte before anything reaches the server: the transaction lives on."""
    engine = create_engine(corpus.dsn)
    try:
        with Session(engine) as session:
            session.execute(text(LOAD_PGVECTOR))
            session.execute(text(CALLER_SETTINGS[0]))
            before = session.execute(text(SNAPSHOT)).one()
            with pytest.raises(Exception, match="NUL"):
                orm_exact_search(session, orm_model, corpus.queries[0],
                                 where=[orm_model.content == "a\x00b"])
            assert session.execute(text(SNAPSHOT)).one() == before
    finally:
        engine.dispose()


def test_an_autocommit_orm_search_whose_settings_fail_leaves_no_transaction_open(
    corpus, orm_model, monkeypatch
):
    import mrl_pg.sqlalchemy._target
    from mrl_pg.statement.query import settings_sql

    monkeypatch.setattr(mrl_pg.sqlalchemy._target, "adaptive_settings_sql",
                        lambda *a, **kw: settings_sql([("hnsw.ef_search", "not a number")]))
    engine = create_engine(corpus.dsn, execution_options={"isolation_level": "AUTOCOMMIT"})
    try:
        with Session(engine) as session:
            session.execute(text(LOAD_PGVECTOR))  # so the server checks the value
            with pytest.raises(Exception, match="hnsw.ef_search"):
                orm_search(session, orm_model, corpus.queries[0])
            raw = session.connection().connection.driver_connection
            assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert session.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_statements_derived_from_a_search_run_with_their_own_settings(corpus, orm_model):
    """Eager loads inherit a search's execution options; they must not inherit its settings."""
    from sqlalchemy import func

    engine = create_engine(corpus.dsn)
    try:
        with Session(engine) as session:
            search = mrl_pg.sqlalchemy.exact_search_select(orm_model, corpus.queries[0], k=3)
            assert len(session.execute(search).all()) == 3
            derived = select(func.current_setting("enable_indexscan")).execution_options(
                **search.get_execution_options())
            assert session.execute(derived).scalar_one() == "on"
    finally:
        engine.dispose()


def test_a_search_on_a_failed_transaction_says_to_roll_back_first(corpus):
    with _transactional(corpus.dsn) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        with pytest.raises(DatabaseError, match="failed transaction; roll it back first"):
            search(conn, corpus.config, corpus.queries[0])
        conn.rollback()
        assert len(search(conn, corpus.config, corpus.queries[0], k=3)) == 3
