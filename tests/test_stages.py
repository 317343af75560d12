"""The first stage is swappable: another stage changes the candidate ORDER BY and the index
walked, and nothing else of the statement."""

from __future__ import annotations

import numpy as np
from psycopg import sql

from mrl_pg import TableConfig, install
from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.psycopg._search import adaptive_search_statement, explain_statement, run_statement
from mrl_pg.schema.tables import render
from mrl_pg.statement.plans import uses_index
from mrl_pg.statement.query import adaptive_search_sql
from mrl_pg.statement.stages import PREFIX_HNSW, BinaryPrefixHnsw
from tests.fix_corpus import copy_rows


def _lines(stage) -> list[str]:
    text = render(adaptive_search_sql(TableConfig(), query=sql.SQL("$1"), pool=sql.SQL("$2"),
                                      k=sql.SQL("$3"), stage=stage))
    return text.splitlines()


def test_a_stage_changes_only_the_candidate_order_by():
    default, binary = _lines(PREFIX_HNSW), _lines(BinaryPrefixHnsw())
    changed = [(a, b) for a, b in zip(default, binary, strict=True) if a != b]
    assert changed == [(
        '    ORDER BY "embedding_prefix" <=> '
        "l2_normalize(subvector($1::vector, 1, 512))::halfvec(512)",
        '    ORDER BY binary_quantize("embedding_prefix")::bit(512) <~> '
        "binary_quantize(l2_normalize(subvector($1::vector, 1, 512))::halfvec(512))::bit(512)",
    )]


def test_the_binary_stage_walks_its_own_index_and_returns_k_reranked_rows(conn, schema):
    config = TableConfig("docs", full_dim=64, prefix_dim=32, schema=schema)
    install(conn, config)
    corpus = make_corpus(3000, 64, seed=4)
    copy_rows(conn, config, corpus.embeddings, corpus.external_ids)
    stage = BinaryPrefixHnsw()
    conn.execute(stage.index_ddl(config))
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    query = make_queries(1, 64, seed=4)[0]
    statement = adaptive_search_statement(config, query, k=10, oversample=8, ef_search=80,
                                          stage=stage)
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")  # 3,000 rows: make the planner choose
        plan = explain_statement(conn, statement, analyze=True, as_json=True)
        rows = run_statement(conn, statement)
    assert uses_index(plan, stage.index_name(config))
    assert not uses_index(plan, config.hnsw_index_name)
    assert len(rows) == 10
    distances = [r[4] for r in rows]
    assert distances == sorted(distances)
    # The re-rank is by full cosine distance, whatever found the candidates.
    full = corpus.embeddings @ (query / np.linalg.norm(query))
    by_id = dict(zip(corpus.external_ids, full, strict=True))
    assert np.allclose([1 - by_id[r[1]] for r in rows], distances, atol=1e-5)
