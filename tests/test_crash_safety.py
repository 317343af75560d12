"""Crash safety, on an embedded server of this module's own (the shared one is never killed).

SIGKILL the server (postmaster and backends) in the middle of an ingest (one transaction,
and --commit-each-batch) and of a concurrent index build, SIGKILL the client in the middle
of an ingest; restart; no batch is half written, the index is valid or not used, and the
same ingest run again ends with exactly the expected rows.
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
from mrl_pg.index import build_hnsw_index, drop_hnsw_index, index_status
from mrl_pg.server import EmbeddedServer

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


def _ingest(dsn: str, path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mrl_pg", "ingest", str(path), "--dsn", dsn, "--table",
         CONFIG.name, "--dim", str(DIM), "--prefix-dim", str(PREFIX), "--batch-size",
         str(BATCH), *extra],
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


def _counts(dsn: str) -> tuple[int, int]:
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.SQL("SELECT count(*), count(DISTINCT external_id) FROM {}")
                           .format(CONFIG.table)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# Uncommitted rows still extend the heap: once it holds about three batches, the load
# is well past its first batch (each row takes about 230 bytes here).
SEVERAL_BATCHES_WRITTEN = "SELECT pg_relation_size('crash') > 3 * 1000 * 230"


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
