"""Timeouts: a search honours statement_timeout; an ingest waiting on a lock fails with a
message naming who holds it, instead of hanging, and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

import mrl_pg
from mrl_pg import TableConfig, install
from mrl_pg.cli._app import cli
from mrl_pg.errors import DatabaseError, LockTimeoutError
from mrl_pg.ingest.load import ingest_arrays
from tests.fix_corpus import copy_rows

DIM = 16


def test_a_search_honours_statement_timeout_and_leaves_the_connection_usable(
    corpus, corpus_conn
):
    corpus_conn.execute("SET statement_timeout = 1")
    with pytest.raises(DatabaseError, match="statement timeout"):
        mrl_pg.exact_search(corpus_conn, corpus.config, corpus.queries[0], k=10)
    assert corpus_conn.info.transaction_status.name == "IDLE"
    corpus_conn.execute("SET statement_timeout = 0")
    assert len(mrl_pg.search(corpus_conn, corpus.config, corpus.queries[0], k=10)) == 10


@pytest.fixture
def table(conn, schema):
    config = TableConfig("docs", full_dim=DIM, prefix_dim=4, schema=schema)
    install(conn, config)
    copy_rows(conn, config, np.random.default_rng(2).normal(size=(20, DIM)).astype(np.float32),
              [f"d{i}" for i in range(20)])
    return config


def _checksum(conn, config):
    return conn.execute(sql.SQL(
        "SELECT count(*), md5(string_agg(external_id || embedding::text, ',' ORDER BY id)) "
        "FROM {}").format(config.table)).fetchone()


def test_an_ingest_blocked_by_a_row_lock_fails_naming_the_holder(conn, table, schema_dsn):
    before = _checksum(conn, table)
    with psycopg.connect(schema_dsn) as holder:
        holder.execute(sql.SQL("UPDATE {} SET content = 'held' WHERE external_id = 'd3'").format(
            table.table))  # holds the row lock, transaction left open
        pid = holder.info.backend_pid
        conn.execute("SET lock_timeout = '200ms'")
        vectors = np.random.default_rng(3).normal(size=(2, DIM)).astype(np.float32)
        with pytest.raises(LockTimeoutError) as caught:
            ingest_arrays(conn, table, vectors, external_ids=["new-1", "d3"])
        message = str(caught.value)
        assert "gave up waiting for a lock on" in message and "lock_timeout = 200ms" in message
        assert f"pid {pid} (idle in transaction)" in message and "UPDATE" in message
        assert caught.value.holders and str(pid) in caught.value.holders[0]
        holder.rollback()
    assert _checksum(conn, table) == before  # nothing half written


def test_the_cli_ingest_gives_up_after_lock_timeout(conn, table, schema, schema_dsn, tmp_path):
    before = _checksum(conn, table)
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"external_id": "d5", "content": "x",
                                "embedding": [1.0] * DIM}) + "\n")
    with psycopg.connect(schema_dsn) as holder:
        holder.execute(sql.SQL("UPDATE {} SET content = 'held' WHERE external_id = 'd5'").format(
            table.table))
        result = CliRunner().invoke(cli, [
            "ingest", str(path), "--dsn", schema_dsn, "--table", "docs", "--schema", schema,
            "--dim", str(DIM), "--prefix-dim", "4", "--lock-timeout", "0.3"])
        holder.rollback()
    assert result.exit_code == 1, result.output
    assert "gave up waiting for a lock" in result.output and "300ms" in result.output
    assert "Traceback" not in result.output
    assert _checksum(conn, table) == before


@pytest.mark.parametrize("concurrently", [False, True])
def test_an_index_build_under_lock_timeout_names_what_it_waited_for(
    conn, table, schema_dsn, concurrently
):
    from mrl_pg.index.build import build_hnsw_index, index_status

    with psycopg.connect(schema_dsn) as holder:
        if concurrently:  # a transaction holding an old snapshot holds up a concurrent build
            holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            holder.execute("SELECT 1")
        else:  # a writer's lock holds up a plain build
            holder.execute(sql.SQL("UPDATE {} SET content = 'w' WHERE external_id = 'd1'")
                           .format(table.table))
        pid = holder.info.backend_pid
        conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(LockTimeoutError) as caught:
            build_hnsw_index(conn, table, concurrently=concurrently)
        holder.rollback()
    message = str(caught.value)
    assert f"pid {pid}" in message and "lock_timeout = 200ms" in message, message
    assert ("waits for every transaction older" in message) == concurrently
    conn.execute("SET lock_timeout = 0")
    status = index_status(conn, table)  # never left half-built or invalid
    assert status.exists and status.valid
