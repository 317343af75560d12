"""mrl_search(...) and mrl_search_<table>(...): the search for psql and RPC callers."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest
from psycopg import sql

from mrl_pg import TableConfig, install, search
from mrl_pg.migrate import upgrade
from tests.fix_corpus import copy_rows


def _call(conn, config, *args):
    function = config.qualified(config.search_function_name)
    placeholders = sql.SQL(", ").join(sql.Placeholder() * len(args))
    return conn.execute(
        sql.SQL("SELECT id, external_id, distance FROM {}({})").format(function, placeholders),
        args,
    ).fetchall()


def test_sql_function_returns_the_same_ids_as_the_python_search(corpus, corpus_conn):
    for i, query in enumerate(corpus.queries[:20]):
        flt = {} if i % 2 else {"lang": "de"}
        rows = _call(corpus_conn, corpus.config, query, 10, 8, json.dumps(flt))
        python = search(corpus_conn, corpus.config, query, k=10, oversample=8, filter=flt)
        assert [r[0] for r in rows] == [r.id for r in python]
        np.testing.assert_allclose([r[2] for r in rows], [r.distance for r in python])


def test_sql_function_fills_a_pool_above_ef_search(corpus, corpus_conn):
    """A pool of 3,200 is more than ef_search's ceiling (1000): only the iterative scan fills
    it. auto_explain shows the candidate scan the function ran."""
    from mrl_pg.bench.rls import AUTO_EXPLAIN, captured_plans

    for statement in AUTO_EXPLAIN:
        corpus_conn.execute(statement)
    with captured_plans(corpus_conn) as plans:
        rows = _call(corpus_conn, corpus.config, corpus.queries[0], 100, 32, "{}")
    corpus_conn.execute("RESET client_min_messages")
    assert len(rows) == 100
    distances = [r[2] for r in rows]
    assert distances == sorted(distances)
    candidates = [n for n in _nodes(plans[0][0]["Plan"])
                  if n.get("Subplan Name") == "CTE candidates"]
    assert len(candidates) == 1 and candidates[0]["Actual Rows"] == 3200


def _nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def test_sql_function_settings_do_not_leak_into_the_callers_transaction(corpus, corpus_conn):
    with corpus_conn.transaction():
        _call(corpus_conn, corpus.config, corpus.queries[0], 50, 16, "{}")
        ef = corpus_conn.execute("SHOW hnsw.ef_search").fetchone()
        scan = corpus_conn.execute("SHOW hnsw.iterative_scan").fetchone()
    assert ef == ("40",) and scan == ("off",)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("[1,2,3]", 10, 8, "{}"), "query_embedding has 3 dimensions, expected 1536"),
        ((None, 10, 8, "{}"), "query_embedding must not be NULL"),
        (("ZERO", 10, 8, "{}"), "zero prefix"),
        (("ONES", 0, 8, "{}"), "match_count must be between 1 and 1000, got 0"),
        (("ONES", 1001, 8, "{}"), "match_count must be between 1 and 1000, got 1001"),
        (("ONES", None, 8, "{}"), "match_count must be between 1 and 1000, got NULL"),
        (("ONES", 10, 0, "{}"), "oversample must be at least 1, got 0"),
        (("ONES", 10, 8, "[1]"), "filter must be a JSON object, got a JSON array"),
        (("ONES", 10, 8, '"x"'), "filter must be a JSON object, got a JSON string"),
    ],
)
def test_bad_arguments_raise_errors_naming_the_argument(corpus, corpus_conn, args, message):
    vector = {"ZERO": np.zeros(1536, np.float32), "ONES": np.ones(1536, np.float32)}
    first = vector.get(args[0], args[0]) if isinstance(args[0], str) else args[0]
    with pytest.raises(psycopg.Error, match=message.replace("[", r"\[")):
        _call(corpus_conn, corpus.config, first, *args[1:])


def test_defaults_make_match_count_oversample_and_filter_optional(corpus, corpus_conn):
    function = corpus.config.qualified(corpus.config.search_function_name)
    rows = corpus_conn.execute(
        sql.SQL("SELECT id FROM {}(%s)").format(function), (corpus.queries[1],)
    ).fetchall()
    named = corpus_conn.execute(  # PostgREST-style named arguments
        sql.SQL("SELECT id FROM {}(query_embedding => %s, match_count => 5)").format(function),
        (corpus.queries[1],),
    ).fetchall()
    assert len(rows) == 10 and named == rows[:5]


def function_settings(schema: str) -> list[str]:
    """The SET clauses every search function carries, as ``pg_proc.proconfig`` stores them."""
    return [
        f"search_path=pg_catalog, {schema}, public, extensions",
        "hnsw.ef_search=40",
        "hnsw.iterative_scan=relaxed_order",
        "hnsw.max_scan_tuples=20000",
        "hnsw.scan_mem_multiplier=1",
        "plan_cache_mode=force_custom_plan",
        "enable_seqscan=off",
        "max_parallel_workers_per_gather=0",
    ]


def test_function_is_security_invoker_with_a_fixed_search_path(corpus, corpus_conn):
    row = corpus_conn.execute(
        "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = %s::regproc",
        (f"{corpus.config.schema}.{corpus.config.search_function_name}",),
    ).fetchone()
    assert row == (False, function_settings(corpus.config.schema))


def test_function_installed_without_a_schema_lives_in_the_current_schema(conn, schema):
    install(conn, TableConfig("docs", full_dim=8, prefix_dim=4))  # search_path: schema, public
    rows = conn.execute(
        "SELECT n.nspname, p.prosecdef, p.proconfig FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE p.proname = 'mrl_search_docs' AND n.nspname IN (%s, 'public')", (schema,)
    ).fetchall()
    assert rows == [(schema, False, function_settings(schema))]


def test_default_function_from_the_migrations_searches_mrl_documents(fresh_database):
    upgrade(fresh_database)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 1536)).astype(np.float32)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        from mrl_pg.db import configure_connection

        configure_connection(conn)
        config = TableConfig()
        copy_rows(conn, config, vectors, [f"r{i}" for i in range(300)])
        rows = conn.execute(
            "SELECT external_id, distance FROM mrl_search(%s, 3)", (vectors[42],)
        ).fetchall()
    assert rows[0][0] == "r42" and abs(rows[0][1]) < 1e-6
    assert len(rows) == 3


def test_custom_3072_256_table_works_end_to_end(conn, schema):
    config = TableConfig("big", full_dim=3072, prefix_dim=256, schema=schema)
    install(conn, config)
    rng = np.random.default_rng(4)
    vectors = (rng.normal(size=(500, 3072)) * (1 + np.arange(3072) / 64) ** -0.5).astype(
        np.float32)
    copy_rows(conn, config, vectors, [f"b{i}" for i in range(500)],
              [{"even": i % 2 == 0} for i in range(500)])
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    python = search(conn, config, vectors[7], k=5, filter={"even": False})
    assert python[0].external_id == "b7" and len(python) == 5
    rows = _call(conn, config, vectors[7], 5, 8, '{"even": false}')
    assert [r[0] for r in rows] == [r.id for r in python]
    assert config.search_function_name == "mrl_search_big"
