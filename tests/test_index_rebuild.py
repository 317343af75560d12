"""Rebuilding an existing HNSW index never leaves the table without one, against the real server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from mrl_pg import TableConfig, explain, install
from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.db import configure_connection
from mrl_pg.errors import DatabaseError
from mrl_pg.index.build import (
    IndexProgress,
    _rebuild_index_name,
    build_hnsw_index,
    drop_hnsw_index,
    index_status,
)
from tests.fix_corpus import copy_rows
from tests.planinfo import nodes

pytestmark = pytest.mark.slow  # concurrent rebuilds under load, and crashes between their steps

ROWS = 10_000
DIM = 1536
# Serial and with little memory the build of ROWS prefixes takes seconds, so
# readers and cancels have time to act while it runs.
SLOW = {"parallel_workers": 0, "maintenance_work_mem": "64MB"}


@pytest.fixture
def indexed(conn: psycopg.Connection[Any], schema: str) -> TableConfig:
    """ROWS x 1536 rows with their HNSW index, analyzed so the planner picks the index."""
    config = TableConfig("docs", full_dim=DIM, schema=schema)
    install(conn, config, with_search_function=False)
    drop_hnsw_index(conn, config)
    data = make_corpus(ROWS, DIM, seed=3)
    with conn.transaction():
        copy_rows(conn, config, data.embeddings, data.external_ids, data.metadata)
    build_hnsw_index(conn, config)
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    return config


def _hnsw_scans(plan: Any, table: str) -> set[str]:
    """Names of the indexes the plan scans on ``table``."""
    return {
        n["Index Name"] for n in nodes(plan)
        if n["Node Type"] in ("Index Scan", "Index Only Scan") and n.get("Relation Name") == table
    }


def _oid(conn: psycopg.Connection[Any], config: TableConfig, name: str) -> int | None:
    row = conn.execute(
        "SELECT to_regclass(%s)::oid", (config.qualified(name).as_string(conn),)
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _indexes(conn: psycopg.Connection[Any], config: TableConfig) -> dict[str, bool]:
    """Every index of the table by name, with pg_index.indisvalid."""
    rows = conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass(%s)",
        (config.table.as_string(conn),),
    ).fetchall()
    return {name: valid for name, valid in rows}


def _hnsw_indexes(conn: psycopg.Connection[Any], config: TableConfig) -> dict[str, bool]:
    return {name: valid for name, valid in _indexes(conn, config).items() if "prefix" in name}


@contextmanager
def _cancel_on_first_report(dsn: str, pid: int) -> Iterator[Callable[[IndexProgress], None]]:
    """A progress callback that cancels backend ``pid`` on the first report it gets."""
    with psycopg.connect(dsn, autocommit=True) as other:
        cancelled: list[IndexProgress] = []

        def on_progress(progress: IndexProgress) -> None:
            if not cancelled:
                cancelled.append(progress)
                other.execute("SELECT pg_cancel_backend(%s)", (pid,))

        yield on_progress
        assert cancelled, "the build ended before any progress report, so it was not cancelled"


def _assert_old_index_serves_searches(
    conn: psycopg.Connection[Any], config: TableConfig, old_oid: int | None
) -> None:
    assert _oid(conn, config, config.hnsw_index_name) == old_oid
    assert _hnsw_indexes(conn, config) == {config.hnsw_index_name: True}
    assert all(_indexes(conn, config).values())
    status = index_status(conn, config)
    assert status.exists and status.valid
    query = make_queries(1, DIM, seed=3)[0]
    assert _hnsw_scans(explain(conn, config, query, as_json=True), config.name) == {
        config.hnsw_index_name
    }


def _plans_during(schema_dsn: str, config: TableConfig, work: Callable[[], Any]) -> list[set[str]]:
    """The HNSW indexes each adaptive-search plan used while ``work`` ran, planned nonstop."""
    queries = make_queries(20, DIM, seed=3)
    plans: list[set[str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            with psycopg.connect(schema_dsn, autocommit=True) as reader:
                configure_connection(reader)
                while not stop.is_set():
                    plan = explain(reader, config, queries[len(plans) % len(queries)],
                                   as_json=True)
                    plans.append(_hnsw_scans(plan, config.name))
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        work()
    finally:
        stop.set()
        reader.join()
    assert not errors, errors
    assert len(plans) > 20, f"only {len(plans)} plans were made during the rebuild"
    return plans


def test_searches_use_an_hnsw_index_throughout_a_concurrent_rebuild(
    conn, schema_dsn, indexed
):
    config = indexed
    old_oid = _oid(conn, config, config.hnsw_index_name)
    usable = {config.hnsw_index_name, _rebuild_index_name(config)}
    plans = _plans_during(schema_dsn, config,
                          lambda: build_hnsw_index(conn, config, concurrently=True, **SLOW))
    without = [p for p in plans if not p or not p <= usable]
    assert not without, f"{len(without)} of {len(plans)} plans used no HNSW index: {without[:3]}"
    assert _oid(conn, config, config.hnsw_index_name) not in (None, old_oid)
    assert _hnsw_indexes(conn, config) == {config.hnsw_index_name: True}
    assert index_status(conn, config).valid


def test_a_crash_between_drop_and_rename_leaves_an_index_the_next_rebuild_keeps(
    conn, schema_dsn, indexed
):
    """Crashed after DROP INDEX CONCURRENTLY, before the rename: only the new index is left."""
    config = indexed
    temporary = _rebuild_index_name(config)
    conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
        config.qualified(config.hnsw_index_name), sql.Identifier(temporary)))
    plans = _plans_during(schema_dsn, config,
                          lambda: build_hnsw_index(conn, config, concurrently=True, **SLOW))
    without = [p for p in plans if not p]
    assert not without, f"{len(without)} of {len(plans)} plans used no HNSW index"
    assert _hnsw_indexes(conn, config) == {config.hnsw_index_name: True}


def test_a_cancelled_concurrent_rebuild_keeps_the_old_index_valid_and_in_use(
    conn, schema_dsn, indexed
):
    old_oid = _oid(conn, indexed, indexed.hnsw_index_name)

    with (
        _cancel_on_first_report(schema_dsn, conn.info.backend_pid) as cancel,
        pytest.raises(DatabaseError, match="canceling statement"),
    ):
        build_hnsw_index(conn, indexed, concurrently=True, on_progress=cancel,
                         poll_interval=0.01, **SLOW)

    _assert_old_index_serves_searches(conn, indexed, old_oid)


def test_a_cancelled_rebuild_in_one_transaction_keeps_the_old_index(conn, schema_dsn, indexed):
    old_oid = _oid(conn, indexed, indexed.hnsw_index_name)

    with (
        _cancel_on_first_report(schema_dsn, conn.info.backend_pid) as cancel,
        pytest.raises(DatabaseError, match="canceling statement"),
    ):
        build_hnsw_index(conn, indexed, on_progress=cancel, poll_interval=0.01, **SLOW)

    _assert_old_index_serves_searches(conn, indexed, old_oid)


@pytest.fixture
def small(conn: psycopg.Connection[Any], schema: str) -> TableConfig:
    config = TableConfig("docs", full_dim=16, prefix_dim=8, schema=schema)
    install(conn, config, with_search_function=False)
    data = make_corpus(300, 16, clusters=5, seed=4)
    copy_rows(conn, config, data.embeddings, data.external_ids)
    return config


def test_a_concurrent_rebuild_drops_the_invalid_leftover_of_a_crashed_run(conn, small):
    temporary = _rebuild_index_name(small)
    # A failed CREATE INDEX CONCURRENTLY leaves an invalid index, as a crash mid-rebuild does.
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON {} (metadata)").format(
            sql.Identifier(temporary), small.table))
    assert _indexes(conn, small)[temporary] is False

    build_hnsw_index(conn, small, concurrently=True)

    assert temporary not in _indexes(conn, small)
    assert all(_indexes(conn, small).values())
    assert _hnsw_indexes(conn, small) == {small.hnsw_index_name: True}


def test_a_concurrent_rebuild_refuses_to_drop_another_relation_with_its_temporary_name(
    conn, small
):
    temporary = _rebuild_index_name(small)
    conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(small.qualified(temporary)))

    with pytest.raises(DatabaseError, match=f"{temporary} already exists and is not an index"):
        build_hnsw_index(conn, small, concurrently=True)

    assert _oid(conn, small, temporary) is not None
    assert _hnsw_indexes(conn, small) == {small.hnsw_index_name: True}


def test_a_rebuild_that_fails_after_dropping_the_old_index_still_ends_with_the_new_one(
    conn, small, monkeypatch
):
    import mrl_pg.index.build

    rename = mrl_pg.index.build._rename_statement
    calls: list[TableConfig] = []

    def rename_failing_once(config: TableConfig) -> sql.Composed:
        calls.append(config)
        return sql.SQL("SELECT 1 / 0").format() if len(calls) == 1 else rename(config)

    monkeypatch.setattr(mrl_pg.index.build, "_rename_statement", rename_failing_once)
    old_oid = _oid(conn, small, small.hnsw_index_name)

    with pytest.raises(DatabaseError, match="division by zero"):
        build_hnsw_index(conn, small, concurrently=True)

    assert len(calls) == 2
    assert _oid(conn, small, small.hnsw_index_name) not in (None, old_oid)
    assert _hnsw_indexes(conn, small) == {small.hnsw_index_name: True}


def test_the_temporary_name_fits_in_63_bytes_and_names_nothing_else():
    longest = TableConfig("t" * 38)
    names = {_rebuild_index_name(TableConfig(n)) for n in ("docs", "t" * 33, "t" * 38)}

    assert len(_rebuild_index_name(longest).encode()) == 63
    assert len(names) == 3
    for config in (TableConfig("docs"), longest):
        temporary = _rebuild_index_name(config)
        assert temporary != config.hnsw_index_name
        assert temporary not in (config.metadata_index_name, config.pkey_name,
                                 config.external_id_key_name)
