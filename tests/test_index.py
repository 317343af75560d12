"""Building the prefix HNSW index after a bulk load, against the real server."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from mrl_pg import TableConfig, install
from mrl_pg.cli._app import cli
from mrl_pg.errors import DatabaseError, InvalidConfigError
from mrl_pg.index.build import (
    PHASE_DONE,
    IndexProgress,
    _current_setting,
    _setting_bytes,
    build_hnsw_index,
    default_maintenance_work_mem,
    default_parallel_workers,
    drop_hnsw_index,
    estimate_hnsw_bytes,
    fits_in_memory,
    index_status,
)

pytestmark = pytest.mark.slow  # index builds: sizes, memory, progress, parallel workers

ROWS = 3000
LOADING = "building index: loading tuples"


def _config(schema: str, **kwargs: Any) -> TableConfig:
    return TableConfig("docs", full_dim=128, prefix_dim=32, schema=schema, **kwargs)


def _load(conn: psycopg.Connection[Any], config: TableConfig, rows: int = ROWS) -> None:
    """Install the table without its HNSW index and COPY random-normal rows into it."""
    install(conn, config, with_search_function=False)
    drop_hnsw_index(conn, config)
    _insert(conn, config, rows, seed=7)


def _insert(
    conn: psycopg.Connection[Any], config: TableConfig, rows: int, *, seed: int = 8
) -> None:
    vectors = np.random.default_rng(seed).standard_normal((rows, config.full_dim), dtype=np.float32)
    statement = sql.SQL("COPY {} (embedding) FROM STDIN WITH (FORMAT BINARY)").format(config.table)
    with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(["vector"])
        for vector in vectors:
            copy.write_row([vector])


def _indexdef(conn: psycopg.Connection[Any], config: TableConfig) -> tuple[str, str]:
    row = conn.execute(
        "SELECT am.amname, pg_get_indexdef(c.oid) FROM pg_class c JOIN pg_am am ON am.oid = c.relam"
        " WHERE c.oid = to_regclass(%s)",
        (config.qualified(config.hnsw_index_name).as_string(conn),),
    ).fetchone()
    assert row is not None, "index is missing"
    return row[0], row[1]


@pytest.fixture
def loaded(conn: psycopg.Connection[Any], schema: str) -> TableConfig:
    config = _config(schema)
    _load(conn, config)
    return config


def test_build_creates_a_valid_hnsw_index_with_the_configured_opclass_and_parameters(
    conn, schema
):
    config = _config(schema, hnsw_m=12, hnsw_ef_construction=48)
    _load(conn, config)
    assert not index_status(conn, config).exists

    report = build_hnsw_index(conn, config)

    method, definition = _indexdef(conn, config)
    assert method == "hnsw"
    assert "(embedding_prefix halfvec_cosine_ops)" in definition
    assert "m='12'" in definition and "ef_construction='48'" in definition
    status = index_status(conn, config)
    assert status.exists and status.valid and status.bytes > 0
    assert status.estimated_rows == ROWS
    assert report.rows == ROWS
    assert report.index_bytes == status.bytes
    assert report.seconds > 0
    assert report.warnings == []


def test_build_replaces_an_existing_index(conn, loaded):
    build_hnsw_index(conn, loaded)
    first_oid = conn.execute(
        "SELECT to_regclass(%s)::oid",
        (loaded.qualified(loaded.hnsw_index_name).as_string(conn),),
    ).fetchone()

    build_hnsw_index(conn, loaded)

    second_oid = conn.execute(
        "SELECT to_regclass(%s)::oid",
        (loaded.qualified(loaded.hnsw_index_name).as_string(conn),),
    ).fetchone()
    assert first_oid != second_oid
    assert index_status(conn, loaded).valid


def test_progress_is_reported_in_the_loading_phase_and_ends_with_done(conn, loaded):
    seen: list[IndexProgress] = []

    build_hnsw_index(conn, loaded, on_progress=seen.append, poll_interval=0.01)

    loading = [p for p in seen if p.phase == LOADING]
    assert loading, f"no progress in phase {LOADING!r}: {seen}"
    assert all(p.total == ROWS and 0 <= p.done <= ROWS for p in loading)
    assert [p.done for p in loading] == sorted(p.done for p in loading)
    assert seen[-1] == IndexProgress(PHASE_DONE, ROWS, ROWS)


def test_tiny_maintenance_work_mem_is_reported_by_the_estimate_and_by_pgvector(conn, loaded):
    heard: list[str] = []

    report = build_hnsw_index(conn, loaded, maintenance_work_mem="1MB", on_warning=heard.append)

    assert report.maintenance_work_mem == 1024 * 1024
    assert any("maintenance_work_mem is 1.0 MB" in w for w in report.warnings)
    assert any(
        w.startswith("NOTICE: hnsw graph no longer fits into maintenance_work_mem")
        for w in report.warnings
    ), report.warnings
    assert heard == report.warnings
    assert index_status(conn, loaded).valid


def test_build_settings_do_not_outlive_the_build(conn, loaded):
    before = conn.execute(
        "SELECT current_setting('maintenance_work_mem'),"
        " current_setting('max_parallel_maintenance_workers')"
    ).fetchone()

    report = build_hnsw_index(conn, loaded, maintenance_work_mem="96MB", parallel_workers=0)

    assert report.maintenance_work_mem == 96 * 1024 * 1024 and report.parallel_workers == 0
    after = conn.execute(
        "SELECT current_setting('maintenance_work_mem'),"
        " current_setting('max_parallel_maintenance_workers')"
    ).fetchone()
    assert after == before


def test_concurrent_build_restores_session_settings_and_leaves_a_valid_index(conn, loaded):
    build_hnsw_index(conn, loaded)
    before = conn.execute("SELECT current_setting('maintenance_work_mem')").fetchone()

    report = build_hnsw_index(conn, loaded, concurrently=True, maintenance_work_mem="80MB")

    assert report.rows == ROWS
    assert index_status(conn, loaded).valid
    assert conn.execute("SELECT current_setting('maintenance_work_mem')").fetchone() == before


def test_build_on_a_non_autocommit_connection_is_committed(schema_dsn, loaded):
    with psycopg.connect(schema_dsn) as other:
        build_hnsw_index(other, loaded)
        assert other.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with psycopg.connect(schema_dsn, autocommit=True) as fresh:
        assert index_status(fresh, loaded).valid


def test_drop_says_whether_there_was_an_index(conn, loaded):
    build_hnsw_index(conn, loaded)

    assert drop_hnsw_index(conn, loaded) is True
    assert drop_hnsw_index(conn, loaded) is False
    assert not index_status(conn, loaded).exists


def test_building_an_unknown_table_raises_database_error(conn, schema):
    with pytest.raises(DatabaseError, match=f"table {schema}.nowhere does not exist"):
        build_hnsw_index(conn, TableConfig("nowhere", full_dim=8, prefix_dim=4, schema=schema))


def test_invalid_build_settings_raise_invalid_config_error_and_keep_the_old_index(conn, loaded):
    build_hnsw_index(conn, loaded)

    with pytest.raises(InvalidConfigError, match="maintenance_work_mem"):
        build_hnsw_index(conn, loaded, maintenance_work_mem="lots")
    with pytest.raises(InvalidConfigError, match="parallel_workers"):
        build_hnsw_index(conn, loaded, parallel_workers=-1)
    assert index_status(conn, loaded).valid


def test_estimate_grows_with_rows_and_prefix_dimension():
    small = TableConfig("docs", full_dim=1536, prefix_dim=256)
    wide = TableConfig("docs", full_dim=1536, prefix_dim=1024)
    assert estimate_hnsw_bytes(100_000, small) < estimate_hnsw_bytes(200_000, small)
    assert estimate_hnsw_bytes(100_000, small) < estimate_hnsw_bytes(100_000, wide)
    assert estimate_hnsw_bytes(100_000, TableConfig(hnsw_m=8)) < estimate_hnsw_bytes(
        100_000, TableConfig(hnsw_m=32)
    )


def test_estimate_matches_pgvectors_own_memory_accounting():
    # Measured on pgvector 0.8.6 from the "no longer fits after N tuples" NOTICE:
    # 16 MB held 9,645 prefixes of halfvec(512) with m = 16 (1,739 bytes each).
    config = TableConfig("docs", full_dim=1536, prefix_dim=512)
    per_row = (estimate_hnsw_bytes(1_000_000, config) - estimate_hnsw_bytes(0, config)) / 1e6
    assert 1739 * 0.95 < per_row < 1739 * 1.10


def test_fits_in_memory_compares_the_estimate_with_the_budget():
    config = TableConfig()
    need = estimate_hnsw_bytes(50_000, config)
    assert fits_in_memory(50_000, config, need)
    assert not fits_in_memory(50_000, config, need - 1)


def test_default_memory_covers_the_estimated_graph_within_a_quarter_of_ram():
    assert default_maintenance_work_mem(0) == 64 * 2**20
    need = estimate_hnsw_bytes(1_000_000, TableConfig())
    assert default_maintenance_work_mem(need) >= need


def test_default_parallel_workers_are_the_usable_cpus_less_one_for_the_leader(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5, 7}, raising=False)
    assert default_parallel_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert default_parallel_workers() == 0
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert default_parallel_workers() == 5


def test_cli_index_build_prints_a_one_line_summary(schema_dsn, loaded, conn):
    result = CliRunner().invoke(cli, [
        "index", "build", "--dsn", schema_dsn, "--schema", loaded.schema or "",
        "--table", "docs", "--dim", "128", "--prefix-dim", "32", "--workers", "0",
        "--maintenance-work-mem", "128MB",
    ])

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"built docs_embedding_prefix_hnsw on {loaded.schema}.docs: "
                               f"{ROWS:,} rows in ")
    assert "maintenance_work_mem 128.0 MB" in lines[0]
    assert index_status(conn, loaded).valid


def test_cli_index_status_and_drop(schema_dsn, loaded):
    args = ["--dsn", schema_dsn, "--schema", loaded.schema or "", "--table", "docs",
            "--dim", "128", "--prefix-dim", "32"]
    runner = CliRunner()

    missing = runner.invoke(cli, ["index", "status", *args])
    assert missing.exit_code == 0 and "missing" in missing.stdout

    assert runner.invoke(cli, ["index", "build", *args]).exit_code == 0
    present = runner.invoke(cli, ["index", "status", *args])
    assert present.exit_code == 0
    assert "docs_embedding_prefix_hnsw: valid" in present.stdout
    assert f"{ROWS:,} rows" in present.stdout

    dropped = runner.invoke(cli, ["index", "drop", *args])
    assert dropped.exit_code == 0 and "dropped docs_embedding_prefix_hnsw" in dropped.stderr


def test_status_gives_the_planner_estimate_which_inserts_without_analyze_leave_behind(
    conn, schema_dsn, loaded
):
    build_hnsw_index(conn, loaded)
    conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(loaded.table))
    _insert(conn, loaded, 1000)
    args = ["--dsn", schema_dsn, "--schema", loaded.schema or "", "--table", "docs",
            "--dim", "128", "--prefix-dim", "32"]

    assert index_status(conn, loaded).estimated_rows == ROWS
    result = CliRunner().invoke(cli, ["index", "status", *args])
    assert result.exit_code == 0, result.output
    assert f"about {ROWS:,} rows (planner estimate, refreshed by ANALYZE)" in result.stdout

    conn.execute(sql.SQL("ANALYZE {}").format(loaded.table))
    assert index_status(conn, loaded).estimated_rows == ROWS + 1000


class _NoRows:
    """A connection whose every statement returns no row."""

    def execute(self, *args: Any) -> _NoRows:
        return self

    def fetchone(self) -> None:
        return None


@pytest.mark.parametrize("read", [_current_setting, _setting_bytes])
def test_a_setting_the_server_does_not_return_raises_database_error(read):
    with pytest.raises(DatabaseError, match="could not read the setting maintenance_work_mem"):
        read(_NoRows(), "maintenance_work_mem")


def test_cli_index_build_on_an_unknown_table_exits_1_with_one_line(schema_dsn, schema):
    result = CliRunner().invoke(cli, [
        "index", "build", "--dsn", schema_dsn, "--schema", schema, "--table", "nowhere",
    ])

    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: table {schema}.nowhere does not exist"
    assert "Traceback" not in result.output


def test_every_index_command_has_help_text():
    for name in ("build", "status", "drop"):
        result = CliRunner().invoke(cli, ["index", name, "--help"])
        assert result.exit_code == 0
        assert len(result.stdout.split("\n\n")[1].strip()) > 10
