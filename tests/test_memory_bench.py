"""``mrl-pg bench --memory-bound``: cache sizes, direct I/O on a restarted server, eviction."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from mrl_pg import TableConfig, install
from mrl_pg.bench.memory import (
    MemoryBoundOptions,
    cache_sizes,
    evict,
    memory_methods,
    restart_with,
    table_relations,
)
from mrl_pg.bench.methods import ADAPTIVE, SINGLE_PASS, BenchTable
from mrl_pg.bench.search import synthetic_data
from mrl_pg.cli._app import cli
from mrl_pg.db import connect
from mrl_pg.errors import InvalidConfigError
from mrl_pg.ingest.load import ingest_arrays
from mrl_pg.server import EmbeddedServer

MB = 2**20


def test_cache_sizes_lie_between_the_prefix_index_and_the_full_index():
    options = MemoryBoundOptions(cache_fractions=(1 / 8, 1 / 4, 1 / 2), headroom_mb=32)
    kept, skipped = cache_sizes(800 * MB, 130 * MB, options)
    assert kept == [(1 / 4, 200), (1 / 2, 400)]
    assert len(skipped) == 1 and "1/8" in skipped[0] and "130 MB prefix index" in skipped[0]
    with pytest.raises(InvalidConfigError):
        MemoryBoundOptions(cache_fractions=(1.5,))


def test_memory_methods_pair_adaptive_settings_with_single_pass_sweeps():
    table = BenchTable(TableConfig("docs"), full_halfvec=False)
    options = MemoryBoundOptions(adaptive=((2, 40), (4, 80)), single_pass=(40, 120))
    methods = memory_methods(table, options)
    assert [(m.family, m.oversample, m.ef_search, m.index) for m in methods] == [
        (ADAPTIVE, 2, 40, table.config.hnsw_index_name),
        (ADAPTIVE, 4, 80, table.config.hnsw_index_name),
        (SINGLE_PASS, None, 40, table.full_index_name),
        (SINGLE_PASS, None, 120, table.full_index_name)]


def test_cli_refuses_fractions_it_cannot_read(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "--dsn", "postgresql:///nowhere",
                                      "--memory-bound", str(tmp_path), "--cache-fractions",
                                      "a/b"])
    assert result.exit_code != 0 and "fractions like 1/4" in result.output


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    """A server of the test's own (the shared one is never restarted), in a directory the
    server's system user can enter when the tests run as root (pytest's tmp_path is 0700)."""
    home = Path(tempfile.mkdtemp(prefix="mrl-pg-memory-"))
    home.chmod(0o755)
    server = EmbeddedServer(home / "server")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow  # its own embedded server, restarted twice
def test_restart_with_direct_io_then_back_and_evict_every_relation(own_server):
    dsn = own_server.url()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        before = conn.execute("SHOW shared_buffers").fetchone()
    dsn = restart_with(own_server, {"shared_buffers": "24MB", "debug_io_direct": "data"})
    config = TableConfig("cached_docs", full_dim=64, prefix_dim=32)
    table = BenchTable(config, full_halfvec=False)
    data = synthetic_data(500, 64, 2, seed=1)
    with connect(dsn, autocommit=True) as conn:
        assert conn.execute("SHOW debug_io_direct").fetchone() == ("data",)
        assert conn.execute("SHOW shared_buffers").fetchone() == ("24MB",)
        install(conn, config, with_search_function=False)
        ingest_arrays(conn, config, data.vectors, external_ids=data.external_ids)
        conn.execute(table.full_index_ddl())
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
        relations = table_relations(conn, table)
        assert {"cached_docs", table.full_index_name,
                config.hnsw_index_name} <= set(relations)
        assert any(r.startswith("pg_toast.") for r in relations)
        cached = "SELECT count(*) FROM pg_buffercache WHERE relfilenode = pg_relation_filenode(%s)"
        assert conn.execute(cached, ("cached_docs",)).fetchone()[0] > 0
        assert evict(conn, relations, []) > 0
        for relation in relations:
            assert conn.execute(cached, (relation,)).fetchone() == (0,)
    dsn = restart_with(own_server, {"shared_buffers": None, "debug_io_direct": None})
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SHOW debug_io_direct").fetchone() == ("",)
        assert conn.execute("SHOW shared_buffers").fetchone() != ("24MB",)
        assert before is not None
