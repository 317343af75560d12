"""The layouts benchmark, small: 2,000 rows x 256 dims, prefix 64, 20 queries.

Both layouts are built from the same vectors in the test's schema by the benchmark's
own functions (``mrl_pg/bench/layouts.py``; the 100,000-row run is ``docs/layouts-100k.txt``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from psycopg import sql

from mrl_pg.bench.layouts import (
    COLUMN,
    EXPRESSION,
    build_layouts,
    has_column,
    measure,
    report_lines,
    search_rows,
)
from mrl_pg.bench.search import PlanGuardError
from mrl_pg.bench.synthetic import make_corpus, make_queries

pytestmark = pytest.mark.slow  # the layouts study end to end

ROWS, DIM, PREFIX, QUERIES = 2_000, 256, 64, 20


@pytest.fixture
def layouts(conn, schema_dsn, schema):
    vectors = make_corpus(ROWS, DIM, seed=3).embeddings
    return vectors, build_layouts(conn, schema_dsn, vectors, PREFIX, schema=schema)


def test_only_the_column_layout_stores_a_prefix_column(conn, layouts):
    _, built = layouts
    column, expression = built[COLUMN].config, built[EXPRESSION].config
    assert has_column(conn, column, "embedding_prefix")
    assert not has_column(conn, expression, "embedding_prefix")
    assert expression.adopted and expression.prefix_column is None
    assert has_column(conn, expression, "embedding") and has_column(conn, column, "embedding")


def test_both_layouts_find_each_row_first_for_its_own_vector(conn, layouts):
    vectors, built = layouts
    picked = np.random.default_rng(5).choice(ROWS, size=QUERIES, replace=False)
    for name in (COLUMN, EXPRESSION):
        top = [found[0] for found in search_rows(conn, built[name], vectors[picked], 10)]
        assert top == picked.tolist(), name


def test_both_layouts_walk_their_index_and_every_figure_is_there(conn, layouts):
    _, built = layouts
    queries = make_queries(QUERIES, DIM, seed=3)
    figures = measure(conn, built, queries, rounds=3, buffer_sample=5)
    for name in (COLUMN, EXPRESSION):
        f, layout = figures[name], built[name]
        assert (f.plans_on_index, f.plans_checked) == (5, 5), (name, f.stray_plan)
        assert f.recall >= 0.9, name
        assert len(f.latencies) == 3 * QUERIES and len(f.round_qps) == 3
        for value in (f.qps, f.ms(50), f.ms(99), f.median_buffers, layout.load_seconds,
                      layout.index_seconds, layout.index_bytes, layout.table_bytes,
                      layout.total_bytes):
            assert math.isfinite(value) and value > 0, (name, value)
        assert f.ms(99) >= f.ms(50)
    assert figures[COLUMN].truth == figures[EXPRESSION].truth  # the same rows in both
    assert built[COLUMN].table_bytes > built[EXPRESSION].table_bytes  # the stored prefix
    lines = report_lines(built, figures)
    for label in ("load seconds", "index build seconds", "HNSW index size", "table size",
                  "recall@10", "QPS, 1 client", "p50 ms", "p99 ms", "shared buffers",
                  "plans walking the HNSW index"):
        assert any(line.startswith(label) for line in lines), label
    assert "5/5" in next(line for line in lines if line.startswith("plans walking"))


def test_a_layout_whose_plan_skips_its_index_stops_the_measurement(conn, layouts):
    _, built = layouts
    expression = built[EXPRESSION].config
    conn.execute(sql.SQL("DROP INDEX {}").format(expression.qualified(expression.hnsw_index_name)))
    with pytest.raises(PlanGuardError, match=EXPRESSION):
        measure(conn, built, make_queries(3, DIM, seed=3), rounds=3, buffer_sample=3)
