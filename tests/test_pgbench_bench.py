"""``mrl-pg bench --pgbench``: scripts, pgbench's summary, a one-second run (no timing asserts)."""

from __future__ import annotations

import pytest

from mrl_pg import TableConfig, install
from mrl_pg.bench.methods import BenchTable
from mrl_pg.bench.pgbench import (
    load_queries,
    parse_tps,
    pgbench_markdown,
    run_pgbench,
    scripts,
)
from mrl_pg.bench.run import TrueNeighbours
from mrl_pg.bench.search import synthetic_data
from mrl_pg.errors import DatabaseError
from mrl_pg.index.build import build_hnsw_index
from mrl_pg.ingest.load import ingest_arrays

SUMMARY = """number of transactions actually processed: 1234
latency average = 1.621 ms
initial connection time = 3.1 ms
tps = 616.912345 (without initial connection time)
"""


def test_parse_tps_reads_pgbench_summary_and_refuses_anything_else():
    assert parse_tps(SUMMARY) == (616.912345, 1.621)
    with pytest.raises(DatabaseError, match="no tps"):
        parse_tps("connection refused")


def test_scripts_pick_a_random_query_and_set_ef_search_per_connection(conn):
    table = BenchTable(TableConfig("pgb_docs", full_dim=64, prefix_dim=32), full_halfvec=False)
    function, single = scripts(table, (77,))
    text = single.text(conn, 200)
    assert text.startswith("\\set qid random(1, 200)\n")
    assert '(SELECT embedding FROM "pgb_docs_queries" WHERE qid = :qid)' in text
    assert "LIMIT 10" in text and single.settings == (("hnsw.ef_search", "77"),)
    assert function.settings == () and "mrl_search" in function.text(conn, 5)


@pytest.mark.slow  # runs pgbench twice for a second each
def test_pgbench_runs_the_function_and_single_pass_with_their_recall(conn, schema_dsn):
    config = TableConfig("pgb_docs", full_dim=64, prefix_dim=32)
    table = BenchTable(config, full_halfvec=False)
    data = synthetic_data(600, 64, 6, seed=2)
    install(conn, config, with_search_function=False)
    ingest_arrays(conn, config, data.vectors, external_ids=data.external_ids)
    build_hnsw_index(conn, config)
    conn.execute(table.full_index_ddl())
    truth = TrueNeighbours(data.vectors, data.external_ids, data.queries, 10)
    results, tuning = run_pgbench(conn, schema_dsn, table, data.queries, truth,
                                  ef_search=(40,), clients=(1,), seconds=1, rounds=1, seed=0)
    assert [r.name for r in results] == [f"{config.search_function_name}(q, 10) as tuned",
                                         "single-pass ef=40"]
    for r in results:
        assert r.tps > 0 and r.latency_ms > 0 and len(r.tps_rounds) == 1
        assert 0.5 <= r.recall <= 1.0  # 600 rows: both find nearly every true neighbour
    assert "oversample" in tuning
    rows = conn.execute('SELECT count(*) FROM "pgb_docs_queries"').fetchone()
    assert rows == (6,)
    load_queries(conn, table, data.queries[:2])  # recreated, not appended to
    assert conn.execute('SELECT count(*) FROM "pgb_docs_queries"').fetchone() == (2,)
    assert any("**" in line for line in pgbench_markdown(results, tuning))
