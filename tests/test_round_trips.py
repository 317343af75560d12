"""One round trip per search, on every way in, counted on a libpq trace.

A round trip is one turn of the conversation: the client sends, then waits
for the server. On the trace that is each switch from frontend (``F``) lines
to backend (``B``) lines. The table is tuned, so every search below also
reads its tuning; the values the settings statement sets are read off the
same trace (its DataRow), so the test also proves the tuning was applied.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import pq, sql
from sqlalchemy.orm import DeclarativeBase, Session

import mrl_pg
from mrl_pg import TableConfig, install
from mrl_pg.db import create_async_engine, create_engine
from mrl_pg.index.saved_tuning import TuningRecord, save_tuning
from mrl_pg.sqlalchemy import mrl_mixin
from mrl_pg.statement.prefix import hnsw_index_ddl
from mrl_pg.statement.tuning import SearchTuning
from tests.fix_corpus import copy_rows

ROWS, DIM, PREFIX = 600, 64, 16
# Not the default rule (8x, ef_search twice the pool): oversample 3, ef_search 5 per pool row.
TUNED = SearchTuning(oversample=3, ef_search=150, k=10)


def turns(trace: str) -> int:
    """Client-to-server turns: how often the client asked the server to answer and waited.

    In a pipeline the client asks with a Sync (or a Flush); a Flush sent right after a
    Sync belongs to it. Replies may be read while the client is still sending (psycopg
    reads as it writes), so interleaved frontend and backend lines are not turns.
    """
    sent = [line.split("\t")[2].strip() for line in trace.splitlines()
            if line.startswith("F\t") and len(line.split("\t")) > 2]
    return sum(1 for i, message in enumerate(sent)
               if message == "Sync" or (message == "Flush" and (i == 0 or sent[i - 1] != "Sync")))


_SETTINGS_ROW = re.compile(r"^B\t\d+\tDataRow\t 10 (.*)$", re.M)


def settings_row(trace: str) -> list[str]:
    """The values the settings statement set: saved, pool, ef_search, iterative scan, ..."""
    rows = _SETTINGS_ROW.findall(trace)
    assert len(rows) == 1, trace
    return re.findall(r"'([^']*)'", rows[0])


@contextmanager
def traced(pgconn: pq.abc.PGconn) -> Iterator[list[str]]:
    out: list[str] = []
    with tempfile.TemporaryFile("w+") as f:
        pgconn.trace(f.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield out
        finally:
            pgconn.untrace()
            f.seek(0)
            out.append(f.read())


@pytest.fixture
def tuned(schema: str, conn: psycopg.Connection[Any]) -> TableConfig:
    config = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    install(conn, config)
    rng = np.random.default_rng(3)
    data = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    conn.execute(sql.SQL("DROP INDEX {}").format(config.qualified(config.hnsw_index_name)))
    copy_rows(conn, config, data, [f"d{i}" for i in range(ROWS)])
    conn.execute(hnsw_index_ddl(config))
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    save_tuning(conn, config, TuningRecord(TUNED))
    return config


QUERY = np.random.default_rng(4).standard_normal(DIM).astype(np.float32)


def check(trace: str, rows: int) -> None:
    assert rows == 10
    assert turns(trace) == 1, trace
    values = settings_row(trace)
    pool, ef_search = int(values[1]), int(values[2])
    assert pool == 10 * TUNED.oversample
    assert ef_search == TUNED.ef_search_for(pool) == 150


@pytest.mark.parametrize("mode", ["autocommit", "idle", "inside"])
def test_a_psycopg_search_is_one_round_trip_with_its_tuning(tuned, schema_dsn, mode):
    with psycopg.connect(schema_dsn, autocommit=mode == "autocommit") as conn:
        mrl_pg.configure_connection(conn)
        if mode == "inside":
            conn.execute("SELECT 1")
        with traced(conn.pgconn) as out:
            rows = mrl_pg.search(conn, tuned, QUERY, k=10)
        check(out[0], len(rows))
        expected = "INTRANS" if mode == "inside" else "IDLE"
        assert conn.info.transaction_status.name == expected


@pytest.mark.parametrize("mode", ["autocommit", "inside"])
async def test_an_async_psycopg_search_is_one_round_trip_with_its_tuning(tuned, schema_dsn, mode):
    from pgvector.psycopg import register_vector_async

    async with await psycopg.AsyncConnection.connect(
            schema_dsn, autocommit=mode == "autocommit") as conn:
        await register_vector_async(conn)
        if mode == "inside":
            await conn.execute("SELECT 1")
        with traced(conn.pgconn) as out:
            rows = await mrl_pg.search_async(conn, tuned, QUERY, k=10)
        check(out[0], len(rows))


def _model(config: TableConfig) -> Any:
    class Base(DeclarativeBase):
        pass

    class Document(mrl_mixin(config), Base):  # type: ignore[misc]
        pass

    return Document


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "AUTOCOMMIT"])
def test_an_orm_search_is_one_round_trip_with_its_tuning(tuned, schema_dsn, isolation):
    engine = create_engine(schema_dsn, execution_options={"isolation_level": isolation})
    model = _model(tuned)
    try:
        with Session(engine) as session:
            session.connection()  # the session's connection is open before the trace
            driver = session.connection().connection.driver_connection
            with traced(driver.pgconn) as out:
                rows = mrl_pg.sqlalchemy.search(session, model, QUERY, k=10)
            check(out[0], len(rows))
    finally:
        engine.dispose()


async def test_an_async_orm_search_is_one_round_trip_with_its_tuning(tuned, schema_dsn):
    from sqlalchemy.ext.asyncio import AsyncSession

    engine = create_async_engine(schema_dsn)
    model = _model(tuned)
    try:
        async with AsyncSession(engine) as session:
            raw = await (await session.connection()).get_raw_connection()
            with traced(raw.driver_connection.pgconn) as out:
                rows = await mrl_pg.sqlalchemy.search_async(session, model, QUERY, k=10)
            check(out[0], len(rows))
    finally:
        await engine.dispose()


def test_turns_counts_each_wait_for_the_server():
    assert turns("F\t4\tSync\nF\t4\tFlush\nB\t5\tReadyForQuery\t I\n") == 1
    assert turns("F\t4\tSync\nB\t5\tX\nF\t9\tExecute\nF\t4\tFlush\nB\t5\tY\n"
                 "F\t4\tSync\nB\t5\tZ\n") == 3
    # A reply read while the client still sends is not a turn.
    assert turns("F\t9\tExecute\nB\t4\tParseComplete\nF\t9\tExecute\nF\t4\tSync\n") == 1
    assert turns("") == 0




@pytest.mark.parametrize(("oversample", "ef_search", "pool", "ef"), [
    (5, None, 50, TUNED.ef_search_for(50)),  # the tuned rule for the caller's pool
    (None, 77, 30, 77),  # the tuned oversample, the caller's ef_search
    (5, 77, 50, 77),  # both given: no tuning read at all
])
def test_what_the_caller_leaves_unset_comes_from_the_tables_tuning(
        tuned, conn, oversample, ef_search, pool, ef):
    with traced(conn.pgconn) as out:
        rows = mrl_pg.search(conn, tuned, QUERY, k=10, oversample=oversample,
                             ef_search=ef_search)
    assert len(rows) == 10 and turns(out[0]) == 1
    values = settings_row(out[0])
    assert (int(values[1]), int(values[2])) == (pool, ef)
    assert ("mrl_pg_tuning" in out[0]) == (oversample is None or ef_search is None)


@pytest.mark.parametrize(("oversample", "ef_search", "pool", "ef"), [
    (5, None, 50, TUNED.ef_search_for(50)),
    (None, 77, 30, 77),
])
def test_what_an_orm_caller_leaves_unset_comes_from_the_tables_tuning(
        tuned, schema_dsn, oversample, ef_search, pool, ef):
    engine = create_engine(schema_dsn)
    model = _model(tuned)
    try:
        with Session(engine) as session:
            driver = session.connection().connection.driver_connection
            with traced(driver.pgconn) as out:
                rows = mrl_pg.sqlalchemy.search(session, model, QUERY, k=10,
                                                oversample=oversample, ef_search=ef_search)
            assert len(rows) == 10 and turns(out[0]) == 1
            values = settings_row(out[0])
            assert (int(values[1]), int(values[2])) == (pool, ef)
    finally:
        engine.dispose()


def test_an_orm_search_stays_inside_the_sessions_transaction(tuned, schema_dsn):
    """The first statement of a session's transaction may be the search: it opens that
    transaction for the session (psycopg's own BEGIN, with its isolation level) and leaves
    it open, so what the session wrote before or after is the session's to commit or not."""
    from sqlalchemy import text

    engine = create_engine(schema_dsn, execution_options={"isolation_level": "REPEATABLE READ"})
    model = _model(tuned)
    try:
        with Session(engine) as session:
            assert len(mrl_pg.sqlalchemy.search(session, model, QUERY, k=10)) == 10
            driver = session.connection().connection.driver_connection
            assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            level = session.execute(text("SHOW transaction_isolation")).scalar_one()
            session.execute(text("DELETE FROM docs WHERE external_id = 'd1'"))
            assert len(mrl_pg.sqlalchemy.search(session, model, QUERY, k=10)) == 10
            ef = session.execute(text("SHOW hnsw.ef_search")).scalar_one()
            session.rollback()
            remaining = session.execute(
                text("SELECT count(*) FROM docs WHERE external_id = 'd1'")).scalar_one()
        assert level == "repeatable read" and ef == "40" and remaining == 1
    finally:
        engine.dispose()
