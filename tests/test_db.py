"""Connections and engines: nothing created on connect, any libpq DSN, pgvector checked."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import text

import mrl_pg
from mrl_pg import InvalidSearchError, PgvectorVersionError, TableConfig, connect, install
from tests.fix_corpus import copy_rows

PACKAGE = Path(mrl_pg.__file__).resolve().parent


def test_connect_creates_no_extension_so_a_read_only_role_can_use_it(fresh_database):
    with pytest.raises(PgvectorVersionError, match="pgvector extension is not installed"):
        connect(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'"
                            ).fetchone() == (0,)


def test_a_role_that_may_only_read_connects_and_searches(conn, schema, schema_dsn):
    config = TableConfig("docs", full_dim=8, prefix_dim=4, schema=schema)
    install(conn, config)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    copy_rows(conn, config, vectors, [f"d{i}" for i in range(20)])
    reader = f"reader_{schema}"
    conn.execute(f"CREATE ROLE {reader} LOGIN")
    try:
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {reader}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}")
        with connect(make_conninfo(schema_dsn, user=reader), autocommit=True) as rconn:
            hits = mrl_pg.search(rconn, config, vectors[7], k=3)
        assert hits[0].external_id == "d7"
    finally:
        conn.execute(f"DROP OWNED BY {reader}")
        conn.execute(f"DROP ROLE {reader}")


def test_engines_take_a_multi_host_dsn_and_register_pgvector_types(database_dsn):
    params = conninfo_to_dict(database_dsn)
    host, port = params.get("host") or "localhost", str(params.get("port") or 5432)
    multi = make_conninfo(database_dsn, host=f"{host},{host}", port=f"{port},{port}")
    engine = mrl_pg.create_engine(multi)
    try:
        with engine.connect() as connection:
            value = connection.execute(text("SELECT '[1,2,3]'::vector")).scalar_one()
        assert np.array_equal(value.to_numpy(), [1, 2, 3])  # a pgvector type, not text
    finally:
        engine.dispose()


async def test_async_engine_takes_the_same_dsn(database_dsn):
    engine = mrl_pg.create_async_engine(database_dsn)
    try:
        async with engine.connect() as connection:
            value = (await connection.execute(text("SELECT '[1,2]'::vector"))).scalar_one()
        assert np.array_equal(value.to_numpy(), [1, 2])
    finally:
        await engine.dispose()


def test_numpy_integers_are_accepted_where_an_integer_is_expected():
    statement = mrl_pg.adaptive_search_statement(TableConfig(), np.ones(1536),
                                                 k=np.int64(10), oversample=np.int32(4))
    assert statement.settings_params is not None
    assert (statement.params["k"], statement.settings_params["oversample"]) == (10, 4)
    assert type(statement.settings_params["oversample"]) is int
    with pytest.raises(InvalidSearchError, match="k must be an integer, got 10.0"):
        mrl_pg.adaptive_search_statement(TableConfig(), np.ones(1536), k=10.0)


@pytest.mark.parametrize("value", [{1, 2}, float("nan"), b"bytes", object()])
def test_a_filter_value_json_cannot_encode_is_a_search_error_naming_it(value):
    with pytest.raises(InvalidSearchError, match="filter cannot be encoded as JSON"):
        mrl_pg.adaptive_search_statement(TableConfig(), np.ones(1536), filter={"a": value})


def test_library_code_has_no_assert_statements():
    """``python -O`` strips asserts: checks that matter raise real errors."""
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert found == []


def test_explain_text_shortens_vector_literals_to_their_dimension(corpus, corpus_conn):
    plan = mrl_pg.explain(corpus_conn, corpus.config, corpus.queries[0], k=5)
    assert "'[512 dims]'::halfvec(512)" in plan
    exact = mrl_pg.explain(corpus_conn, corpus.config, corpus.queries[0], k=5, exact=True)
    assert "'[1536 dims]'::vector" in exact
    assert max(len(line) for line in (plan + exact).splitlines()) < 200
