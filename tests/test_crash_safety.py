"""Crash safety, on an embedded server of this module's own (the shared one is never killed).

SIGKILL the server (postmaster and backends) in the middle of an ingest (one transaction,
and --commit-each-batch) and of a concurrent index build, SIGKILL the client in the middle
of an ingest; restart; no batch is half written, the index is valid or not used, and the
same ingest run again ends with exactly the expected rows. The same on a user's own table
(``articles``, a text key): SIGKILL the server in the middle of ``adopt_table``'s
concurrent index build, and in the middle of ``mrl-pg ingest --table articles``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

import mrl_pg
from mrl_pg import TableConfig, connect, install
from mrl_pg.index.adopt import adopt_table
from mrl_pg.index.build import build_hnsw_index, drop_hnsw_index, index_status
from mrl_pg.schema.catalog import table_config
from mrl_pg.schema.search_function import SEARCH_FUNCTION_ARGS
from mrl_pg.server import EmbeddedServer
from mrl_pg.statement.plans import uses_index

pytestmark = pytest.mark.slow  # servers and clients killed mid-write, each restart takes seconds

DIM, PREFIX, ROWS, BATCH = 32, 8, 12_000, 1000
CONFIG = TableConfig("crash", full_dim=DIM, prefix_dim=PREFIX)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[EmbeddedServer]:
    home = tmp_path_factory.mktemp("crash-server")
    server = EmbeddedServer(home)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash-data") / "rows.jsonl"
    vectors = np.random.default_rng(8).normal(size=(ROWS, DIM)).round(4)
    with path.open("w") as out:
        for i, v in enumerate(vectors):
            out.write(json.dumps({"external_id": f"r{i}", "content": f"row {i}",
                                  "embedding": v.tolist()}) + "\n")
    return path


@pytest.fixture
def dsn(server: EmbeddedServer) -> str:
    url = server.start()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
    with connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(CONFIG.table))
        install(conn, CONFIG)
    return url


def _kill_server(server: EmbeddedServer) -> None:
    """SIGKILL the postmaster and every backend: a power cut, as far as the data goes."""
    pid = server.status().pid
    assert pid is not None
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    for child in [int(p) for p in children.stdout.split()] + [pid]:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while server.status().running and time.monotonic() < deadline:
        time.sleep(0.1)


def _ingest(dsn: str, path: Path, *extra: str, config: TableConfig = CONFIG
            ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mrl_pg", "ingest", str(path), "--dsn", dsn, "--table",
         config.name, "--dim", str(config.full_dim), "--prefix-dim", str(config.prefix_dim),
         "--batch-size", str(BATCH), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_until(dsn: str, condition: str, timeout: float = 60) -> None:
    """Poll (from another connection) until ``condition`` (SQL returning one bool) holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(condition).fetchone()  # noqa: S608 - fixed test SQL
            if row and row[0]:
                return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {condition}")


def _counts(dsn: str, table: str = CONFIG.name, key: str = "external_id") -> tuple[int, int]:
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.SQL("SELECT count(*), count(DISTINCT {}) FROM {}")
                           .format(sql.Identifier(key), sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _several_batches_written(table: str, row_bytes: int, before: int = 0) -> str:
    """SQL that holds once ``table``'s heap grew by about three batches past ``before`` bytes.

    Uncommitted rows (new ones, and new versions of updated ones) still extend the heap:
    the load is then well past its first batch.
    """
    return (f"SELECT pg_relation_size('{table}') > "  # noqa: S608 - fixed test SQL
            f"{before} + 3 * {BATCH} * {row_bytes}")


SEVERAL_BATCHES_WRITTEN = _several_batches_written(CONFIG.name, 230)  # 230 bytes a row


def test_a_server_killed_mid_ingest_loses_the_whole_transaction_and_a_rerun_completes(
    server, dsn, rows_file
):
    client = _ingest(dsn, rows_file)
    _wait_until(dsn, SEVERAL_BATCHES_WRITTEN)
    _kill_server(server)
    client.wait(timeout=60)
    assert client.returncode != 0
    dsn = server.start()  # crash recovery
    assert _counts(dsn) == (0, 0)  # one transaction: nothing of it survived
    rerun = _ingest(dsn, rows_file)
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read() if rerun.stdout else ""
    assert _counts(dsn) == (ROWS, ROWS)


def test_a_server_killed_mid_ingest_keeps_only_whole_committed_batches(
    server, dsn, rows_file
):
    client = _ingest(dsn, rows_file, "--commit-each-batch")
    _wait_until(dsn, "SELECT count(*) >= 2000 FROM crash")  # two committed batches
    _kill_server(server)
    client.wait(timeout=60)
    dsn = server.start()
    kept, distinct = _counts(dsn)
    assert kept == distinct and kept % BATCH == 0 and 0 < kept < ROWS, kept
    rerun = _ingest(dsn, rows_file, "--commit-each-batch")
    assert rerun.wait(timeout=300) == 0
    assert _counts(dsn) == (ROWS, ROWS)  # upsert on the key: no duplicates


def test_a_client_killed_mid_ingest_leaves_nothing_half_written(server, dsn, rows_file):
    client = _ingest(dsn, rows_file)
    _wait_until(dsn, SEVERAL_BATCHES_WRITTEN)
    client.send_signal(signal.SIGKILL)
    client.wait(timeout=30)
    _wait_until(dsn, "SELECT count(*) = 0 FROM pg_stat_activity WHERE query ILIKE 'COPY%' "
                     "AND state <> 'idle'")
    assert _counts(dsn) == (0, 0)
    rerun = _ingest(dsn, rows_file)
    assert rerun.wait(timeout=300) == 0
    assert _counts(dsn) == (ROWS, ROWS)


def test_a_server_killed_mid_index_build_never_leaves_an_index_searches_trust(
    server, dsn, rows_file
):
    assert _ingest(dsn, rows_file, "--defer-index").wait(timeout=300) == 0
    with connect(dsn, autocommit=True) as conn:
        drop_hnsw_index(conn, CONFIG)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            with connect(dsn, autocommit=True) as conn:
                build_hnsw_index(conn, CONFIG, concurrently=True)
        except BaseException as exc:  # noqa: BLE001 - the kill makes it fail
            errors.append(exc)

    builder = threading.Thread(target=build)
    builder.start()
    _wait_until(dsn, "SELECT count(*) > 0 FROM pg_stat_progress_create_index")
    _kill_server(server)
    builder.join(timeout=60)
    assert errors  # the build did not finish
    dsn = server.start()
    query = np.random.default_rng(1).normal(size=DIM).astype(np.float32)
    with connect(dsn, autocommit=True) as conn:
        status = index_status(conn, CONFIG)
        assert not status.exists or not status.valid  # an invalid index is never used...
        assert len(mrl_pg.search(conn, CONFIG, query, k=10)) == 10  # ...and search still works
        build_hnsw_index(conn, CONFIG, concurrently=True)  # the leftover is replaced
        status = index_status(conn, CONFIG)
        assert status.exists and status.valid
    assert _counts(dsn) == (ROWS, ROWS)


# The user's own table: a text key, columns of its own, filled and written without mrl_pg.
ARTICLES = "articles"
ADOPT_ROWS = 15_000  # the prefix index takes seconds to build
ARTICLE_ROWS, UPDATED, NEW = 2000, 1000, 4000  # the ingest updates 1,000 rows, adds 4,000


def _articles(dsn: str, rows: int) -> TableConfig:
    """``articles`` as an application made it (rows ``a0``, ``a1``, ...), not adopted yet."""
    vectors = np.random.default_rng(5).normal(size=(rows, DIM)).astype(np.float32)
    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(ARTICLES)))
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}").format(
            sql.Identifier(f"mrl_search_{ARTICLES}")))
        conn.execute(sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, author_id int, title text, "
                             "embedding vector({}))").format(sql.Identifier(ARTICLES),
                                                             sql.Literal(DIM)))
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)")
                                            .format(sql.Identifier(ARTICLES))) as copy:
            copy.set_types(["text", "int4", "text", "vector"])
            for i, vector in enumerate(vectors):
                copy.write_row([f"a{i}", i % 100, f"title {i}", vector])
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(ARTICLES)))
        return table_config(conn, ARTICLES, embedding="embedding", prefix_dim=PREFIX)


def _article_rows(dsn: str) -> dict[str, tuple[object, ...]]:
    """Every row of ``articles``: id -> (author_id, title, embedding as floats)."""
    with connect(dsn, autocommit=True) as conn:
        found = conn.execute(sql.SQL("SELECT id, author_id, title, embedding FROM {}")
                             .format(sql.Identifier(ARTICLES))).fetchall()
    return {key: (author, title, tuple(vector.to_numpy().tolist()))
            for key, author, title, vector in found}


def _prefix_indexes(conn: psycopg.Connection[object]) -> tuple[int, bool]:
    """How many indexes of ``articles`` hold the prefix expression, and whether all are valid."""
    row = conn.execute(
        "SELECT count(*), coalesce(bool_and(i.indisvalid), false) FROM pg_index AS i "
        "WHERE i.indrelid = to_regclass(%s) "
        "AND pg_get_indexdef(i.indexrelid) LIKE '%%l2_normalize(subvector(embedding%%'",
        (ARTICLES,)).fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def _search_function(conn: psycopg.Connection[object], config: TableConfig) -> bool:
    row = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (
        f"{config.search_function_name}({SEARCH_FUNCTION_ARGS})",)).fetchone()
    return bool(row and row[0])


def test_a_server_killed_mid_adopt_leaves_an_index_searches_never_use_and_adopt_redoes_it(
    server, dsn
):
    config = _articles(dsn, ADOPT_ROWS)
    before = _article_rows(dsn)
    errors: list[BaseException] = []

    def adopt() -> None:
        try:
            with connect(dsn, autocommit=True) as conn:
                adopt_table(conn, config)
        except BaseException as exc:  # noqa: BLE001 - the kill makes it fail
            errors.append(exc)

    adopter = threading.Thread(target=adopt)
    adopter.start()
    # The index is in the catalog (not yet valid) once the build itself runs.
    _wait_until(dsn, "SELECT count(*) > 0 FROM pg_stat_progress_create_index "
                     "WHERE phase LIKE 'building index%'")
    _kill_server(server)
    adopter.join(timeout=60)
    assert errors  # the adoption did not finish
    dsn = server.start()
    query = np.random.default_rng(1).normal(size=DIM).astype(np.float32)
    own = np.asarray(before["a7"][2], dtype=np.float32)
    with connect(dsn, autocommit=True) as conn:
        status = index_status(conn, config)
        assert status.exists and not status.valid  # the crashed build's leftover...
        assert _prefix_indexes(conn) == (1, False)
        assert not _search_function(conn, config)
        conn.execute("SET enable_seqscan = off")  # the planner would take any usable index
        assert config.hnsw_index_name not in mrl_pg.explain(conn, config, query, k=10)
        assert len(mrl_pg.search(conn, config, query, k=10)) == 10  # ...is never used
        report = adopt_table(conn, config)
        assert report.index is not None  # the leftover was not kept: the index was built
        assert _prefix_indexes(conn) == (1, True)  # one index, valid, under its own name
        assert index_status(conn, config).valid
        assert _search_function(conn, config)
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(ARTICLES)))
        assert uses_index(mrl_pg.explain(conn, config, own, k=10, as_json=True),
                          config.hnsw_index_name)
        found = mrl_pg.search(conn, config, own, k=10)
        assert len(found) == 10 and found[0].id == "a7"
        called = conn.execute(sql.SQL("SELECT id FROM {}(%s, 10)").format(
            sql.Identifier(config.search_function_name)), (own,)).fetchall()
        assert len(called) == 10 and called[0][0] == "a7"
    assert _article_rows(dsn) == before  # adopting never touched a row
    print(f"\nadopt killed mid-build: {len(before):,} rows checked unchanged")


def test_a_server_killed_mid_ingest_into_an_adopted_table_leaves_it_as_it_was(
    server, dsn, tmp_path
):
    config = _articles(dsn, ARTICLE_ROWS)
    with connect(dsn, autocommit=True) as conn:
        adopt_table(conn, config)
        row = conn.execute("SELECT pg_relation_size(%s)", (ARTICLES,)).fetchone()
    assert row is not None
    before = _article_rows(dsn)
    first = ARTICLE_ROWS - UPDATED  # a1000 ... a1999 exist: updated; a2000 ... a5999 new
    vectors = np.random.default_rng(9).normal(size=(UPDATED + NEW, DIM)).astype(np.float32)
    loaded = {f"a{first + i}": (7, f"loaded {first + i}", tuple(v.tolist()))
              for i, v in enumerate(vectors)}
    path = tmp_path / "articles.jsonl"
    path.write_text("".join(json.dumps({"id": key, "author_id": author, "title": title,
                                        "embedding": list(vector)}) + "\n"
                            for key, (author, title, vector) in loaded.items()))
    client = _ingest(dsn, path, config=config)
    _wait_until(dsn, _several_batches_written(ARTICLES, 150, before=int(row[0])))
    _kill_server(server)
    client.wait(timeout=60)
    assert client.returncode != 0
    dsn = server.start()
    assert _article_rows(dsn) == before  # one transaction: nothing of it survived
    rerun = _ingest(dsn, path, config=config)
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read() if rerun.stdout else ""
    expected = {**before, **loaded}
    assert _article_rows(dsn) == expected
    assert _counts(dsn, ARTICLES, key="id") == (len(expected), len(expected))
    print(f"\nadopted ingest: {len(expected):,} rows checked, {UPDATED:,} updated, "
          f"{NEW:,} new")
