"""Search guards a mutation run found unwatched: each test fails when its guard is removed."""

from __future__ import annotations

import numpy as np

import mrl_pg
from mrl_pg import TableConfig, install
from mrl_pg.statement.query import MAX_SCAN_TUPLES_RULE, ef_search_for
from mrl_pg.statement.tuning import DEFAULT_TUNING
from tests.fix_corpus import copy_rows


def test_the_documented_settings_rules_hold_at_their_bends():
    """README and docstrings promise: ef_search is twice the pool within 40..1000;
    max_scan_tuples is pgvector's 20,000, raised to twice the pool."""
    assert [ef_search_for(p) for p in (1, 20, 21, 80, 500, 501, 5000)] == [
        40, 40, 42, 160, 1000, 1000, 1000]
    assert DEFAULT_TUNING.ef_search_for(80) == 160 and DEFAULT_TUNING.oversample == 8
    assert [MAX_SCAN_TUPLES_RULE(p) for p in (80, 10_000, 10_001, 100_000)] == [
        20_000, 20_000, 20_002, 200_000]


def test_rows_at_equal_distance_come_back_in_id_order(conn, schema):
    config = TableConfig("docs", full_dim=8, prefix_dim=4, schema=schema)
    install(conn, config)
    rng = np.random.default_rng(5)
    same = rng.normal(size=8).astype(np.float32)
    vectors = np.vstack([rng.normal(size=(10, 8)), np.repeat(same[None], 6, axis=0)])
    ids = [f"d{i}" for i in range(16)]
    order = rng.permutation(16)  # inserted out of order, so the heap order is no help
    copy_rows(conn, config, vectors[order].astype(np.float32), [ids[i] for i in order])
    for search in (mrl_pg.exact_search, mrl_pg.search):
        found = search(conn, config, same, k=6)
        assert [r.distance for r in found] == [found[0].distance] * 6
        assert [r.id for r in found] == sorted(r.id for r in found), search.__name__


def test_searches_are_never_prepared_on_the_server(corpus, corpus_conn):
    """Prepared statements could be replanned generically; every search plans afresh."""
    for query in corpus.queries[:12]:
        mrl_pg.search(corpus_conn, corpus.config, query, k=10)
        mrl_pg.exact_search(corpus_conn, corpus.config, query, k=3)
    prepared = corpus_conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert prepared == (0,)
