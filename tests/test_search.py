"""Adaptive search on 20,000 x 1536 Matryoshka-like rows: plan, pool, recall, filters."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from psycopg import sql

from mrl_pg import TableConfig, exact_search, explain, install, search
from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.db import configure_connection
from mrl_pg.errors import DimensionMismatchError, InvalidSearchError, InvalidVectorError
from mrl_pg.index.build import drop_hnsw_index
from mrl_pg.psycopg._search import adaptive_search_statement
from mrl_pg.statement.prefix import hnsw_index_ddl
from mrl_pg.statement.query import adaptive_search_sql, ef_search_for, exact_search_sql
from tests.fix_corpus import copy_rows
from tests.planinfo import candidate_limit, index_scans, nodes


def recall(found: list[int], truth: list[int]) -> float:
    return len(set(found) & set(truth)) / len(truth)


def brute_force_top_k(
    embeddings: npt.NDArray[np.float32], query: npt.NDArray[np.float32], k: int
) -> list[int]:
    """Row numbers of the k nearest rows by cosine, computed by numpy over every row."""
    sims = embeddings @ query / (np.linalg.norm(embeddings, axis=1) * np.linalg.norm(query))
    return [int(i) for i in np.argsort(-sims, kind="stable")[:k]]


def scanned_rows(node: dict[str, Any]) -> int:
    """Rows a scan node produced over all its loops (PostgreSQL 18 reports a per-loop mean)."""
    return round(node["Actual Rows"] * node["Actual Loops"])


def test_adaptive_search_walks_the_prefix_hnsw_index(corpus, corpus_conn):
    plan = explain(corpus_conn, corpus.config, corpus.queries[0], as_json=True, analyze=True)
    scans = index_scans(plan, corpus.config.hnsw_index_name)
    assert len(scans) == 1 and scans[0]["Node Type"] == "Index Scan"
    assert "embedding_prefix <=>" in scans[0]["Order By"]
    # The exact scan that stands in for a short walk is planned, and never runs.
    seq_scans = [n for n in nodes(plan) if n["Node Type"] == "Seq Scan"]
    assert seq_scans and all(n["Actual Loops"] == 0 for n in seq_scans)
    # Nor does it start parallel workers: PostgreSQL launches them even for a scan whose
    # one-time filter keeps it from running (8 ms of a 10 ms search at 100,000 x 1536). On
    # 20,000 rows the planner wants them only when parallelism is made free.
    for setting in ("min_parallel_table_scan_size = 0", "parallel_setup_cost = 0",
                    "parallel_tuple_cost = 0"):
        corpus_conn.execute(f"SET {setting}")
    try:
        plan = explain(corpus_conn, corpus.config, corpus.queries[0], as_json=True)
    finally:
        corpus_conn.execute("RESET ALL")
    assert not [n for n in nodes(plan) if n["Node Type"].startswith("Gather")]


@pytest.mark.parametrize("k", [10, 50, 100])
@pytest.mark.parametrize("oversample", [8, 16, 32])
def test_candidate_pool_is_k_times_oversample_even_above_ef_search(
    corpus, corpus_conn, k, oversample
):
    query = corpus.queries[k + oversample]
    pool = k * oversample
    # Whatever plan the planner picks for this pool size, the pool is full.
    plan = explain(corpus_conn, corpus.config, query, k=k, oversample=oversample,
                   analyze=True, as_json=True)
    assert candidate_limit(plan)["Actual Rows"] == pool
    # And through the HNSW index itself (the plan on large tables), including pools above
    # hnsw.ef_search's ceiling of 1000, which only the iterative scan can fill.
    with corpus_conn.transaction():
        corpus_conn.execute("SET LOCAL enable_seqscan = off")
        plan = explain(corpus_conn, corpus.config, query, k=k, oversample=oversample,
                       analyze=True, as_json=True)
        results = search(corpus_conn, corpus.config, query, k=k, oversample=oversample)
    scans = index_scans(plan, corpus.config.hnsw_index_name)
    assert scans and scans[0]["Actual Rows"] == pool
    assert candidate_limit(plan)["Actual Rows"] == pool
    assert len(results) == k
    distances = [r.distance for r in results]
    assert distances == sorted(distances)


def test_without_the_settings_a_naive_query_gets_only_ef_search_candidates(corpus, corpus_conn):
    """The trap the settings exist for: default hnsw.ef_search = 40 caps an 80-row pool."""
    statement = adaptive_search_sql(
        corpus.config, query=sql.Placeholder("query"), pool=sql.Placeholder("pool"),
        k=sql.Placeholder("k"),
    )
    with corpus_conn.transaction():
        corpus_conn.execute("SET LOCAL hnsw.iterative_scan = off")
        corpus_conn.execute("SET LOCAL hnsw.ef_search = 40")
        rows = corpus_conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(statement),
            {"query": corpus.queries[0], "pool": 80, "k": 10},
        ).fetchone()
    assert rows is not None
    assert candidate_limit(rows[0])["Actual Rows"] == 40


def test_adaptive_recall_at_10_against_exact_is_at_least_098(corpus, corpus_conn):
    recalls, adaptive_ms, exact_ms = [], [], []
    for query in corpus.queries[:100]:
        t0 = time.perf_counter()
        found = search(corpus_conn, corpus.config, query, k=10)
        t1 = time.perf_counter()
        truth = exact_search(corpus_conn, corpus.config, query, k=10)
        t2 = time.perf_counter()
        adaptive_ms.append((t1 - t0) * 1000)
        exact_ms.append((t2 - t1) * 1000)
        recalls.append(recall([r.id for r in found], [r.id for r in truth]))
    mean = float(np.mean(recalls))
    print(f"\nrecall@10 adaptive 8x vs exact over 100 queries on 20,000 x 1536: {mean:.4f}; "
          f"mean latency adaptive {np.mean(adaptive_ms):.1f} ms, exact {np.mean(exact_ms):.1f} ms")
    assert mean >= 0.98  # speed is the benchmark's business: unit tests do not time things


def test_exact_search_matches_numpy_brute_force(corpus, corpus_conn):
    embeddings = corpus.corpus.embeddings
    for query in corpus.queries[:5]:
        sims = embeddings @ query / np.linalg.norm(query)
        truth = [corpus.corpus.external_ids[i] for i in np.argsort(-sims)[:10]]
        found = exact_search(corpus_conn, corpus.config, query, k=10)
        assert [r.external_id for r in found] == truth
        np.testing.assert_allclose([r.distance for r in found], 1 - np.sort(sims)[::-1][:10],
                                   atol=1e-5)


def test_exact_search_never_uses_the_index_even_after_many_adaptive_runs(schema, schema_dsn):
    """Beside a full-dimension HNSW index the planner would rather walk, and with every
    statement prepared (prepare_threshold=0), exact search still compares every row."""
    rows, dim, k = 3000, 256, 10
    config = TableConfig("docs", full_dim=dim, prefix_dim=64, schema=schema)
    data = make_corpus(rows, dim, seed=5)
    queries = make_queries(8, dim, seed=5)
    full_index = "docs_embedding_full_hnsw"
    with psycopg.connect(schema_dsn, autocommit=True, prepare_threshold=0) as conn:
        configure_connection(conn)
        install(conn, config)
        copy_rows(conn, config, data.embeddings, data.external_ids, data.metadata)
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw ({} vector_cosine_ops)").format(
            sql.Identifier(full_index), config.table, sql.Identifier(config.embedding_column)))
        conn.execute(sql.SQL("ANALYZE {}").format(config.table))
        # The trap: without exact search's settings the planner walks the approximate index.
        bare = exact_search_sql(config, query=sql.Placeholder("query"), k=sql.Placeholder("k"))
        row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(bare),
                           {"query": queries[0], "k": k}).fetchone()
        assert row is not None and index_scans(row[0], full_index)
        for query in queries:
            search(conn, config, query, k=k)
        for query in queries:
            found = exact_search(conn, config, query, k=k)
            truth = brute_force_top_k(data.embeddings, query, k)
            assert [r.external_id for r in found] == [data.external_ids[i] for i in truth]
        plan = explain(conn, config, queries[0], k=k, exact=True, analyze=True, as_json=True)
    assert not [n for n in nodes(plan) if "Index" in n["Node Type"]]
    scans = [n for n in nodes(plan) if n["Node Type"] in ("Seq Scan", "Parallel Seq Scan")]
    assert len(scans) == 1 and scanned_rows(scans[0]) == rows


def test_filter_matching_one_percent_still_returns_k_rows_with_high_recall(corpus, corpus_conn):
    recalls = []
    for i, query in enumerate(corpus.queries[:30]):
        flt = {"bucket": i % 100}
        found = search(corpus_conn, corpus.config, query, k=10, filter=flt)
        truth = exact_search(corpus_conn, corpus.config, query, k=10, filter=flt)
        assert len(found) == 10
        assert all(r.metadata["bucket"] == i % 100 for r in found)
        recalls.append(recall([r.id for r in found], [r.id for r in truth]))
    print(f"\nrecall@10 with a 1% metadata filter over 30 queries: {np.mean(recalls):.4f}")
    assert np.mean(recalls) >= 0.95


def test_filter_matching_one_percent_through_the_hnsw_iterative_scan(corpus, corpus_conn):
    """With the GIN index out of the way, the HNSW iterative scan alone keeps results full."""
    recalls = []
    for i, query in enumerate(corpus.queries[:20]):
        flt = {"bucket": (i * 7) % 100}
        with corpus_conn.transaction():
            corpus_conn.execute("SET LOCAL enable_bitmapscan = off")
            found = search(corpus_conn, corpus.config, query, k=10, filter=flt)
        truth = exact_search(corpus_conn, corpus.config, query, k=10, filter=flt)
        assert len(found) == 10
        recalls.append(recall([r.id for r in found], [r.id for r in truth]))
    print(f"\nrecall@10, 1% filter, iterative HNSW scan only: {np.mean(recalls):.4f}")
    assert np.mean(recalls) >= 0.95


def test_filter_matching_nothing_returns_no_rows_quickly_with_a_bounded_scan(schema, conn):
    """The HNSW iterative scan gives up after max_scan_tuples, explicit or the default.

    On a table larger than the default budget (20,000), so that an unbounded scan,
    which would visit every row, is told apart from a bounded one.
    """
    rows, dim = 30_000, 64
    config = TableConfig("docs", full_dim=dim, prefix_dim=16, schema=schema,
                         hnsw_m=8, hnsw_ef_construction=16)
    data = make_corpus(rows, dim, seed=6)
    install(conn, config)
    drop_hnsw_index(conn, config)
    with conn.transaction():
        copy_rows(conn, config, data.embeddings, data.external_ids, data.metadata)
    conn.execute(hnsw_index_ddl(config))
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    query, nothing, pool = make_queries(1, dim, seed=6)[0], {"bucket": 12345}, 10 * 8
    assert search(conn, config, query, filter=nothing) == []  # on whatever path it plans
    # pgvector checks the budget between batches of its iterative scan, so the last batch
    # overshoots it: allow one batch, ef_search candidates with up to 2 * m neighbours each.
    slack = ef_search_for(pool) * 2 * config.hnsw_m
    for max_scan_tuples in (2000, None):
        with conn.transaction():  # force the HNSW path
            conn.execute("SET LOCAL enable_bitmapscan = off")
            conn.execute("SET LOCAL enable_seqscan = off")
            t0 = time.perf_counter()
            assert search(conn, config, query, filter=nothing,
                          max_scan_tuples=max_scan_tuples) == []
            hnsw_ms = (time.perf_counter() - t0) * 1000
            plan = explain(conn, config, query, filter=nothing, max_scan_tuples=max_scan_tuples,
                           analyze=True, as_json=True)
        budget = max_scan_tuples or 20_000  # the documented default for pools up to 10,000
        scans = index_scans(plan, config.hnsw_index_name)
        assert len(scans) == 1 and scans[0]["Node Type"] == "Index Scan"
        visited = scanned_rows(scans[0]) + scans[0]["Rows Removed by Filter"]
        print(f"\nempty filter via HNSW, max_scan_tuples {budget:,}: {visited:,} of {rows:,} "
              f"rows visited in {hnsw_ms:.1f} ms")
        assert budget <= visited <= budget + slack < rows


def test_fewer_matching_rows_than_k_returns_all_of_them(corpus, corpus_conn):
    cluster = int(np.bincount(corpus.corpus.clusters).argmin())
    size = int((corpus.corpus.clusters == cluster).sum())
    found = search(corpus_conn, corpus.config, corpus.queries[0], k=size + 5,
                   filter={"cluster": cluster})
    assert len(found) == size


def test_hostile_filter_keys_and_values_are_data_not_sql(corpus, corpus_conn):
    hostile = {"'); DROP TABLE docs; --": "x' OR '1'='1", "bucket\"": 1}
    assert search(corpus_conn, corpus.config, corpus.queries[0], filter=hostile) == []
    assert exact_search(corpus_conn, corpus.config, corpus.queries[0], filter=hostile) == []
    count = corpus_conn.execute(sql.SQL("SELECT count(*) FROM {}").format(corpus.config.table))
    assert count.fetchone() == (20_000,)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"k": 0}, InvalidSearchError, "k must be between 1 and 1000, got 0"),
        ({"k": 1001}, InvalidSearchError, "got 1001"),
        ({"oversample": 0}, InvalidSearchError, "oversample must be at least 1"),
        ({"filter": ["a"]}, InvalidSearchError, "filter must be a JSON object"),
    ],
)
def test_bad_search_arguments_are_named(corpus, kwargs, error, message):
    with pytest.raises(error, match=message):
        adaptive_search_statement(corpus.config, corpus.queries[0], **kwargs)


@pytest.mark.parametrize(
    ("vector", "error", "message"),
    [
        (np.ones(1535), DimensionMismatchError, "has 1535 dimensions, expected 1536"),
        (np.r_[np.nan, np.ones(1535)], InvalidVectorError, "NaN"),
        (np.zeros(1536), InvalidVectorError, "zero vector"),
        (np.r_[np.zeros(512), np.ones(1024)], InvalidVectorError, "first 512 dimensions"),
    ],
)
def test_bad_query_vectors_are_refused_before_sql(corpus, vector, error, message):
    with pytest.raises(error, match=message):
        adaptive_search_statement(corpus.config, vector)


async def test_async_search_returns_the_same_rows_as_sync(corpus, corpus_conn):
    from mrl_pg import connect_async, exact_search_async, search_async

    conn = await connect_async(corpus.dsn, autocommit=True)
    try:
        for query in corpus.queries[:5]:
            found = await search_async(conn, corpus.config, query, k=10, filter={"lang": "en"})
            sync = search(corpus_conn, corpus.config, query, k=10, filter={"lang": "en"})
            assert [r.id for r in found] == [r.id for r in sync]
            exact = await exact_search_async(conn, corpus.config, query, k=10)
            assert [r.id for r in exact] == [
                r.id for r in exact_search(corpus_conn, corpus.config, query, k=10)
            ]
    finally:
        await conn.close()
