"""Users' own tables (issue 16): NULL embeddings, nullable keys, pages (offset), through every
way in: psycopg sync and async, the ORM, the SQL function and ``mrl-pg search``."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from pgvector.sqlalchemy import VECTOR
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Integer, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from mrl_pg import TableConfig, install
from mrl_pg.cli import cli
from mrl_pg.db import configure_connection, create_engine
from mrl_pg.errors import InvalidConfigError, InvalidSearchError
from mrl_pg.index.adopt import adopt_table
from mrl_pg.psycopg._search import (
    exact_search,
    exact_search_async,
    explain,
    search,
    search_async,
)
from mrl_pg.schema.catalog import table_config
from mrl_pg.schema.search_function import (
    OLD_SEARCH_FUNCTION_ARGS,
    SEARCH_FUNCTION_ARGS,
    search_function_ddl,
)
from mrl_pg.sqlalchemy import exact_search as orm_exact_search
from mrl_pg.sqlalchemy import search as orm_search
from mrl_pg.sqlalchemy import search_select
from mrl_pg.statement.plans import uses_index
from tests.fix_corpus import copy_rows

DIM, PREFIX, ROWS = 16, 8, 400
RNG = np.random.default_rng(7)
VECTORS = RNG.normal(size=(ROWS, DIM)).astype(np.float32)
QUERY = RNG.normal(size=DIM).astype(np.float32)
# "rare" rows: 3 with a vector, 4 without; every 10th other row has no vector either.
RARE_WITH, RARE_WITHOUT = {5, 6, 7}, {8, 9, 10, 11}


def _has_vector(i: int) -> bool:
    return i not in RARE_WITHOUT and not (i % 10 == 0 and i > 20)


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str | None] = mapped_column(Text)
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM), nullable=True)


def _dsn_in(database_dsn: str, schema: str) -> str:
    options = conninfo_to_dict(database_dsn).get("options") or ""
    return make_conninfo(database_dsn, options=f"{options} -c search_path={schema},public".strip())


@pytest.fixture(scope="module")
def products_dsn(database_dsn: str) -> Iterator[str]:
    """``products`` with a nullable embedding (the README's example), adopted."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    dsn = _dsn_in(database_dsn, schema)
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        conn.execute(f"CREATE TABLE products (id int PRIMARY KEY, category text, "
                     f"embedding vector({DIM}))")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO products VALUES (%s, %s, %s)", [
                (i, "rare" if i in RARE_WITH | RARE_WITHOUT else "common",
                 VECTORS[i] if _has_vector(i) else None) for i in range(ROWS)])
        conn.execute("ANALYZE products")
        adopt_table(conn, table_config(conn, "products", prefix_dim=PREFIX))
    yield dsn
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def products(products_dsn: str) -> Iterator[tuple[psycopg.Connection[Any], TableConfig]]:
    with psycopg.connect(products_dsn, autocommit=True) as conn:
        configure_connection(conn)
        yield conn, table_config(conn, "products")


RARE = {"category": "rare"}


def _distances(ids: list[int]) -> list[float]:
    v = VECTORS[ids].astype(np.float64)
    q = QUERY.astype(np.float64)
    return list(1 - (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q)))


# --- 1. NULL embeddings ---------------------------------------------------------------------

def test_rows_without_a_vector_are_never_results_in_psycopg_search(products):
    conn, config = products
    for found in (search(conn, config, QUERY, k=10, where=RARE),
                  exact_search(conn, config, QUERY, k=10, where=RARE)):
        assert {r.id for r in found} == RARE_WITH
        assert all(isinstance(r.distance, float) for r in found)
    everything = exact_search(conn, config, QUERY, k=ROWS)
    assert {r.id for r in everything} == {i for i in range(ROWS) if _has_vector(i)}


async def test_rows_without_a_vector_are_never_results_in_async_search(products_dsn, products):
    _, config = products
    from pgvector.psycopg import register_vector_async

    async with await psycopg.AsyncConnection.connect(products_dsn, autocommit=True) as aconn:
        await register_vector_async(aconn)
        assert {r.id for r in await search_async(aconn, config, QUERY, k=10, where=RARE)} \
            == RARE_WITH
        assert {r.id for r in await exact_search_async(aconn, config, QUERY, k=10,
                                                       where=RARE)} == RARE_WITH


def test_the_sql_function_returns_no_row_without_a_vector(products):
    conn, _ = products
    rows = conn.execute("SELECT id, distance FROM mrl_search_products(%s, 10, 8, %s::jsonb)",
                        (QUERY, json.dumps(RARE))).fetchall()
    assert {r[0] for r in rows} == RARE_WITH
    assert all(r[1] is not None for r in rows)


def test_the_orm_search_returns_no_row_without_a_vector(products_dsn):
    engine = create_engine(products_dsn)
    try:
        with Session(engine) as session:
            where = [Product.category == "rare"]
            found = orm_search(session, Product.embedding, QUERY, k=10, where=where)
            assert {p.id for p, _ in found} == RARE_WITH
            exact = orm_exact_search(session, Product.embedding, QUERY, k=10, where=where)
            assert {p.id for p, _ in exact} == RARE_WITH
    finally:
        engine.dispose()


async def test_the_async_orm_search_returns_no_row_without_a_vector_and_pages(products_dsn):
    from sqlalchemy.ext.asyncio import AsyncSession

    from mrl_pg.db import create_async_engine
    from mrl_pg.sqlalchemy import exact_search_async as orm_exact_search_async
    from mrl_pg.sqlalchemy import search_async as orm_search_async

    engine = create_async_engine(products_dsn)
    try:
        async with AsyncSession(engine) as session:
            where = [Product.category == "rare"]
            found = await orm_search_async(session, Product.embedding, QUERY, k=10, where=where)
            assert {p.id for p, _ in found} == RARE_WITH
            exact = await orm_exact_search_async(session, Product.embedding, QUERY, k=10,
                                                 where=where)
            assert {p.id for p, _ in exact} == RARE_WITH
            whole = await orm_search_async(session, Product.embedding, QUERY, k=20, oversample=1)
            page = await orm_search_async(session, Product.embedding, QUERY, k=10,
                                          oversample=1, offset=10)
            assert len(page) == 10 and [p.id for p, _ in page] == [p.id for p, _ in whole[10:]]
    finally:
        await engine.dispose()


def test_the_cli_search_returns_no_row_without_a_vector(products_dsn, tmp_path):
    path = tmp_path / "q.npy"
    np.save(path, QUERY)
    for extra in ([], ["--exact"]):
        result = CliRunner().invoke(cli, ["search", "--vector", str(path), "--table", "products",
                                          "--where", json.dumps(RARE), "--json",
                                          "--dsn", products_dsn, *extra])
        assert result.exit_code == 0, result.output
        assert {json.loads(line)["id"] for line in result.output.splitlines()} == RARE_WITH


def test_the_not_null_condition_keeps_the_hnsw_index_on_a_large_analyzed_table(conn):
    """The prefix index is an expression index; ``embedding IS NOT NULL`` in the candidate
    scan must not make the planner leave it."""
    vectors = np.random.default_rng(3).normal(size=(20_000, DIM)).astype(np.float32)
    conn.execute(f"CREATE TABLE big (id int PRIMARY KEY, embedding vector({DIM}))")
    with conn.cursor() as cur, cur.copy("COPY big FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "vector"])
        for i, v in enumerate(vectors):
            copy.write_row([i, None if i % 50 == 0 else v])
    conn.execute("ANALYZE big")
    config = table_config(conn, "big", prefix_dim=PREFIX)
    adopt_table(conn, config)
    plan = explain(conn, config, QUERY, k=10, as_json=True)
    assert uses_index(plan, config.hnsw_index_name), plan
    assert "embedding IS NOT NULL" in explain(conn, config, QUERY, k=10)


# --- 2. nullable unique keys ----------------------------------------------------------------

def test_a_nullable_unique_key_is_refused_naming_the_column_and_the_fix(conn):
    conn.execute(f"CREATE TABLE loose_keys (ext text UNIQUE, embedding vector({DIM}))")
    with pytest.raises(InvalidConfigError, match=re.escape(
            "key column ext of loose_keys may hold NULL")) as caught:
        table_config(conn, "loose_keys", key=("ext",), prefix_dim=PREFIX)
    assert "ALTER TABLE loose_keys ALTER COLUMN ext SET NOT NULL" in str(caught.value)
    conn.execute("ALTER TABLE loose_keys ALTER COLUMN ext SET NOT NULL")
    assert table_config(conn, "loose_keys", key=("ext",), prefix_dim=PREFIX).key == ("ext",)


# --- 11. pages ------------------------------------------------------------------------------

def test_page_two_is_rows_k_plus_one_to_2k_through_psycopg(products):
    conn, config = products
    whole = search(conn, config, QUERY, k=20, oversample=4)
    page = search(conn, config, QUERY, k=10, oversample=4, offset=10)
    assert [r.id for r in page] == [r.id for r in whole[10:]]
    exact_whole = exact_search(conn, config, QUERY, k=20)
    exact_page = exact_search(conn, config, QUERY, k=10, offset=10)
    assert [r.id for r in exact_page] == [r.id for r in exact_whole[10:]]
    expected = sorted((i for i in range(ROWS) if _has_vector(i)),
                      key=lambda i: _distances([i])[0])
    assert [r.id for r in exact_page] == expected[10:20]
    # The pool holds offset + k rows: with oversample 1 a page past the first still fills.
    tight = search(conn, config, QUERY, k=10, oversample=1, offset=10)
    assert len(tight) == 10
    assert [r.id for r in tight] == [r.id for r in search(conn, config, QUERY, k=20,
                                                          oversample=1)[10:]]


def test_the_pool_of_a_page_holds_offset_plus_k_candidates(products):
    """A short walk would be replaced by the exact answer, so the rows alone cannot tell a
    pool too small for the page: the candidate scan itself must have read offset + k."""
    from mrl_pg.statement.plans import plan_tree

    conn, config = products
    plan = explain(conn, config, QUERY, k=10, oversample=1, ef_search=40, offset=10,
                   analyze=True, as_json=True)
    [candidates] = [n for n in plan_tree(plan) if n.get("Subplan Name") == "CTE candidates"]
    assert candidates["Actual Rows"] == 20, candidates


def test_a_short_page_is_the_exact_answer_past_the_offset(products):
    """Fewer matching rows than offset + k: the walk comes back short and the exact answer
    replaces it, past the same offset (never the rows of the page before)."""
    conn, config = products
    ordered = [r.id for r in exact_search(conn, config, QUERY, k=10, where=RARE)]
    assert len(ordered) == 3
    assert [r.id for r in search(conn, config, QUERY, k=5, offset=1, where=RARE)] == ordered[1:]
    assert [r.id for r in exact_search(conn, config, QUERY, k=5, offset=1, where=RARE)] \
        == ordered[1:]
    rows = conn.execute("SELECT id FROM mrl_search_products(%s, 5, 8, %s::jsonb, 1)",
                        (QUERY, json.dumps(RARE))).fetchall()
    assert [r[0] for r in rows] == ordered[1:]


async def test_page_two_through_async_psycopg(products_dsn, products):
    _, config = products
    from pgvector.psycopg import register_vector_async

    async with await psycopg.AsyncConnection.connect(products_dsn, autocommit=True) as aconn:
        await register_vector_async(aconn)
        whole = await search_async(aconn, config, QUERY, k=20, oversample=4)
        page = await search_async(aconn, config, QUERY, k=10, oversample=4, offset=10)
        assert [r.id for r in page] == [r.id for r in whole[10:]]


def test_page_two_through_the_sql_function(products):
    conn, _ = products
    whole = conn.execute("SELECT id FROM mrl_search_products(%s, 20, 4)", (QUERY,)).fetchall()
    page = conn.execute(
        "SELECT id FROM mrl_search_products(query_embedding => %s, match_count => 10, "
        "oversample => 4, match_offset => 10)", (QUERY,)).fetchall()
    assert len(page) == 10 and page == whole[10:]
    tight = conn.execute("SELECT id FROM mrl_search_products(%s, 10, 1, '{}', 10)",
                         (QUERY,)).fetchall()
    assert len(tight) == 10
    with pytest.raises(psycopg.Error, match="match_offset must be at least 0"):
        conn.execute("SELECT * FROM mrl_search_products(%s, 10, 4, '{}', -1)", (QUERY,))


def test_page_two_through_the_cli(products_dsn, tmp_path):
    path = tmp_path / "q.npy"
    np.save(path, QUERY)

    def ids(*extra: str) -> list[int]:
        result = CliRunner().invoke(cli, ["search", "--vector", str(path), "--table",
                                          "products", "--json", "--oversample", "4",
                                          "--dsn", products_dsn, *extra])
        assert result.exit_code == 0, result.output
        return [json.loads(line)["id"] for line in result.output.splitlines()]

    assert ids("-k", "10", "--offset", "10") == ids("-k", "20")[10:]


def test_the_orm_pages_with_offset_and_refuses_offset_on_the_select(products_dsn):
    engine = create_engine(products_dsn)
    try:
        with Session(engine) as session:
            whole = orm_search(session, Product.embedding, QUERY, k=20, oversample=4)
            page = orm_search(session, Product.embedding, QUERY, k=10, oversample=4, offset=10)
            assert [p.id for p, _ in page] == [p.id for p, _ in whole[10:]]
            exact_whole = orm_exact_search(session, Product.embedding, QUERY, k=20)
            exact_page = orm_exact_search(session, Product.embedding, QUERY, k=10, offset=10)
            assert [p.id for p, _ in exact_page] == [p.id for p, _ in exact_whole[10:]]
            assert len(exact_page) == 10
        stmt = search_select(Product.embedding, QUERY, k=10, prefix_dim=PREFIX)
        for call in (lambda: stmt.offset(10), lambda: stmt.limit(10),
                     lambda: stmt.where(Product.id > 0).offset(10).limit(10)):
            with pytest.raises(InvalidSearchError, match=re.escape(
                    "pass k= and offset= to search_select")):
                call()
    finally:
        engine.dispose()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"offset": -1}, "offset must be a non-negative integer, got -1"),
    ({"offset": 995, "k": 10}, "offset + k must be at most 1000, got 995 + 10"),
    ({"offset": 1.5}, "offset"),
])
def test_bad_offsets_are_refused_before_any_sql(products, kwargs, message):
    conn, config = products
    with pytest.raises(InvalidSearchError, match=re.escape(message)):
        search(conn, config, QUERY, **kwargs)


def test_the_managed_tables_function_pages_and_keeps_metadata_containment(conn, schema):
    config = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    install(conn, config)
    copy_rows(conn, config, VECTORS[:100], [f"d{i}" for i in range(100)],
              [{"even": i % 2 == 0} for i in range(100)])
    name = sql.Identifier(schema, "mrl_search_docs")
    whole = conn.execute(sql.SQL("SELECT external_id FROM {}(%s, 20, 4, %s::jsonb)").format(
        name), (QUERY, '{"even": true}')).fetchall()
    page = conn.execute(sql.SQL("SELECT external_id FROM {}(%s, 10, 4, %s::jsonb, 10)").format(
        name), (QUERY, '{"even": true}')).fetchall()
    assert page == whole[10:] and len(page) == 10
    assert all(int(r[0][1:]) % 2 == 0 for r in whole)


def test_the_old_four_argument_function_is_replaced_and_its_grants_kept(conn, schema):
    """Before match_offset the function took four arguments; installing the new one beside it
    would make every call ambiguous, so it is dropped, and who could run it still can."""
    config = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    install(conn, config, with_search_function=False)
    old = sql.SQL("{}({})").format(config.qualified("mrl_search_docs"),
                                   sql.SQL(OLD_SEARCH_FUNCTION_ARGS))
    conn.execute(sql.SQL(
        "CREATE FUNCTION {}(query_embedding vector, match_count integer DEFAULT 10, "
        "oversample integer DEFAULT NULL, filter jsonb DEFAULT '{{}}') "
        "RETURNS integer LANGUAGE sql AS 'SELECT 1'").format(config.qualified("mrl_search_docs")))
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(old))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
            old, sql.Identifier(role)))
        conn.execute(search_function_ddl(config))
        signatures = [r[0] for r in conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc AS p "
            "WHERE p.proname = 'mrl_search_docs' AND p.pronamespace = %s::regnamespace",
            (schema,)).fetchall()]
        assert len(signatures) == 1, signatures
        assert signatures[0].endswith("(vector,integer,integer,jsonb,integer)"), signatures
        new = f"{schema}.mrl_search_docs({SEARCH_FUNCTION_ARGS})"
        assert conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')",
                            (role, new)).fetchone()[0]
        assert not conn.execute(
            "SELECT coalesce(bool_or(a.grantee = 0), false) FROM pg_proc AS p, "
            "aclexplode(p.proacl) AS a WHERE p.oid = %s::regprocedure", (new,)).fetchone()[0]
        rows = conn.execute(sql.SQL("SELECT external_id FROM {}(%s, 3)").format(
            config.qualified("mrl_search_docs")), (QUERY,)).fetchall()
        assert rows == []
    finally:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# --- 10. the SQL function's JSON grammar folds to plain conditions ---------------------------

def test_the_sql_functions_json_filter_folds_to_plain_conditions_and_walks_hnsw(conn):
    """Every (column, operator) condition of the JSON grammar is in the function's statement;
    planned with the filter as a constant, those the filter does not name fold away, and a
    named one reaches the planner as a plain comparison beside the HNSW walk."""
    from mrl_pg.bench.rls import AUTO_EXPLAIN, captured_plans, first_stage, plan_tree

    vectors = np.random.default_rng(4).normal(size=(20_000, DIM)).astype(np.float32)
    conn.execute(f"CREATE TABLE shop (id int PRIMARY KEY, score int, category text, "
                 f"tags text[], attrs jsonb, embedding vector({DIM}))")
    with conn.cursor() as cur, cur.copy(
            "COPY shop (id, score, category, embedding) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "int4", "text", "vector"])
        for i, v in enumerate(vectors):
            copy.write_row([i, i % 5, ["books", "toys", "food", "tools", "art"][i % 5], v])
    conn.execute("ANALYZE shop")
    adopt_table(conn, table_config(conn, "shop", prefix_dim=PREFIX))
    for statement in AUTO_EXPLAIN:
        conn.execute(statement)
    filters = {
        '{"score": {"gte": 2.5}}': ("((score)::numeric >= 2.5)", {3, 4}),
        '{"score": {"gte": 3}}': ("(score >= 3)", {3, 4}),
        '{"category": ["books", "toys"]}': ("category = ANY", {0, 1}),
    }
    for text, (condition, scores) in filters.items():
        with captured_plans(conn) as plans:
            rows = conn.execute("SELECT id, score FROM mrl_search_shop(%s, 10, 8, %s::jsonb)",
                                (QUERY, text)).fetchall()
        assert len(rows) == 10 and {r[0] % 5 for r in rows} <= scores, (text, rows)
        [plan] = plans
        assert first_stage(plan).kind == "hnsw", text
        [scan] = [n for n in plan_tree(plan) if n.get("Index Name") == "shop_embedding_prefix_hnsw"]
        folded = scan["Filter"]  # e.g. ((embedding IS NOT NULL) AND (score >= 3))
        assert "jsonb" not in folded and "->" not in folded, folded
        assert condition in folded and "embedding IS NOT NULL" in folded, folded
