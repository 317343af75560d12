"""A user's own table, searched where it is: description, both prefix layouts, column filters,
the psycopg front end and the table's SQL function."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mrl_pg import TableConfig
from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.db import configure_connection
from mrl_pg.errors import InvalidConfigError, InvalidSearchError
from mrl_pg.index.adopt import adopt_table, release_table
from mrl_pg.index.tune import TuneOptions, tune
from mrl_pg.psycopg._search import exact_search, explain, search
from mrl_pg.schema.adoption import adopt_ddl
from mrl_pg.schema.catalog import describe_table, table_config
from mrl_pg.schema.install import install
from mrl_pg.schema.search_function import SEARCH_FUNCTION_ARGS
from mrl_pg.schema.tables import render
from mrl_pg.statement.filters import compile_where, where_sql
from mrl_pg.statement.plans import uses_index
from mrl_pg.statement.tuning import DEFAULT_TUNING, load_tuning
from tests.planinfo import index_scans

ROWS, DIM, PREFIX, AUTHORS = 10_000, 256, 64, 100
INDEX = "articles_embedding_prefix_hnsw"


def _recall(found: list[Any], truth: list[Any]) -> float:
    return len({r.id for r in found} & {r.id for r in truth}) / max(1, len(truth))


@pytest.fixture(scope="module")
def articles_dsn(database_dsn: str) -> Iterator[str]:
    """A schema holding ``articles``, made and filled without mrl_pg, then adopted."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    options = (conninfo_to_dict(database_dsn).get("options") or "")
    dsn = make_conninfo(database_dsn, options=f"{options} -c search_path={name},public".strip())
    vectors = make_corpus(ROWS, DIM, seed=11).embeddings
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        conn.execute(
            "CREATE TABLE articles (id bigserial PRIMARY KEY, title text, body text, "
            f"author_id bigint, published date, embedding vector({DIM}))")
        with conn.cursor() as cur, cur.copy(
            "COPY articles (title, author_id, published, embedding) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "int8", "date", "vector"])
            for i, vector in enumerate(vectors):
                copy.write_row([f"title {i}", i % AUTHORS,
                                None if i % 10 == 0 else date(2024, 1, 1 + i % 28), vector])
        conn.execute("ANALYZE articles")
        config = table_config(conn, "articles", embedding="embedding",
                                        prefix_dim=PREFIX)
        adopt_table(conn, config)
    yield dsn
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def articles(articles_dsn: str) -> Iterator[tuple[psycopg.Connection[Any], TableConfig]]:
    with psycopg.connect(articles_dsn, autocommit=True) as conn:
        configure_connection(conn)
        yield conn, table_config(conn, "articles")


QUERIES = make_queries(20, DIM, seed=11)


def test_table_config_reads_key_columns_and_the_adopted_prefix_from_the_catalog(articles):
    conn, config = articles
    assert config.adopted and config.prefix_column is None
    assert (config.full_dim, config.prefix_dim, config.embedding_type) == (DIM, PREFIX, "vector")
    assert config.key == ("id",)
    assert config.returned_columns == ("id", "title", "body", "author_id", "published")
    assert describe_table(conn, "articles") == config


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"embedding": "nope"}, "no embedding column 'nope'"),
    ({"embedding": "title"}, "is text, expected vector(N) or halfvec(N)"),
    ({"metadata": "title"}, "is text, expected jsonb"),
    ({"tenant": "missing"}, "no tenant column 'missing'"),
    ({"key": ("author_id",)}, "is not a primary key or unique constraint"),
    ({"columns": ("title", "ghost")}, "no returned column 'ghost'"),
])
def test_table_config_names_a_missing_column_or_a_wrong_type(articles, kwargs, message):
    conn, _ = articles
    with pytest.raises(InvalidConfigError, match=re.escape(message)):
        table_config(conn, "articles", **{"embedding": "embedding", **kwargs})


def test_table_config_refuses_a_missing_table_and_a_vector_without_dimension(conn):
    with pytest.raises(InvalidConfigError, match="does not exist"):
        table_config(conn, "no_such_table")
    conn.execute("CREATE TABLE loose (id int PRIMARY KEY, embedding vector)")
    with pytest.raises(InvalidConfigError, match=re.escape(
            'without a dimension, which an HNSW index cannot hold; declare it with one: '
            'ALTER TABLE "loose" ALTER COLUMN "embedding" TYPE vector(N)')):
        table_config(conn, "loose")
    conn.execute("CREATE TABLE keyless (title text, embedding vector(8))")
    with pytest.raises(InvalidConfigError, match="no primary key"):
        table_config(conn, "keyless", prefix_dim=4)
    conn.execute("CREATE TABLE clash (id int PRIMARY KEY, distance real, embedding vector(8))")
    with pytest.raises(InvalidConfigError, match="named 'distance'"):
        table_config(conn, "clash", prefix_dim=4)
    assert table_config(conn, "clash", prefix_dim=4, columns=["id"]).returned_columns \
        == ("id",)


def test_a_table_never_adopted_is_refused_by_describe_table_with_the_way_out(conn):
    conn.execute("CREATE TABLE plain (id int PRIMARY KEY, embedding vector(8))")
    with pytest.raises(InvalidConfigError, match="adopt it first"):
        describe_table(conn, "plain")


def test_adopting_adds_an_expression_index_and_no_column(articles):
    conn, config = articles
    columns = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'articles'::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]
    assert columns == ["id", "title", "body", "author_id", "published", "embedding"]
    definition = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (INDEX,)).fetchone()[0]
    assert f"l2_normalize(subvector(embedding, 1, {PREFIX}))" in definition
    assert "USING hnsw" in definition and "halfvec_cosine_ops" in definition
    statements = [render(s) for s in adopt_ddl(config).concurrent]
    assert statements[0].startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS")


@pytest.mark.parametrize("layout", ["expression", "column"])
def test_the_candidate_order_walks_the_prefix_index_in_both_layouts(conn, layout):
    vectors = make_corpus(3000, DIM, seed=3).embeddings
    if layout == "column":
        config = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX)
        install(conn, config)
        with conn.cursor() as cur, cur.copy(
                "COPY docs (external_id, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "vector"])
            for i, vector in enumerate(vectors):
                copy.write_row([f"d{i}", vector])
    else:
        conn.execute(f"CREATE TABLE docs (id bigint PRIMARY KEY, embedding vector({DIM}))")
        with conn.cursor() as cur, cur.copy(
                "COPY docs (id, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "vector"])
            for i, vector in enumerate(vectors):
                copy.write_row([i, vector])
        config = table_config(conn, "docs", prefix_dim=PREFIX)
        adopt_table(conn, config)
    conn.execute("ANALYZE docs")
    plan = explain(conn, config, vectors[5], k=10, as_json=True)
    assert uses_index(plan, config.hnsw_index_name), plan
    [scan] = index_scans(plan, config.hnsw_index_name)
    assert scan["Node Type"] == "Index Scan"
    assert search(conn, config, vectors[5], k=1)[0].distance == pytest.approx(0, abs=1e-6)


def test_where_filters_compile_to_identifiers_and_typed_parameters(articles):
    _, config = articles
    compiled = compile_where(config, {
        "author_id": [3, 4], "title": "x", "published": {"gte": "2024-01-02", "lt": "2024-02-01"},
        "body": None,
    })
    text = render(where_sql(config, compiled.shape))
    assert text == (
        '"author_id" = ANY(CAST(%(w0)s AS "pg_catalog"."_int8")) AND '
        '"title" = CAST(%(w1)s AS "pg_catalog"."text") AND '
        '"published" >= CAST(%(w2)s AS "pg_catalog"."date") AND '
        '"published" < CAST(%(w3)s AS "pg_catalog"."date") AND "body" IS NULL')
    assert compiled.params == {"w0": [3, 4], "w1": "x", "w2": "2024-01-02", "w3": "2024-02-01"}


@pytest.mark.parametrize(("where", "message"), [
    ({"embedding": 1}, "no filterable column 'embedding'"),
    ({"nope": 1}, "no filterable column 'nope'"),
    ({"author_id": {"like": 1}}, "unknown operator 'like'"),
    ({"author_id": []}, "an empty list"),
    ({"author_id": {"eq": None}}, "use {'author_id': None}"),
    ({"author_id": {"in": "12"}}, "takes a list"),
    ({"author_id": {"is_null": "yes"}}, "takes true or false"),
    ({"author_id": {"eq": {"a": 1}}}, "takes one value"),
    (["author_id"], "must be a mapping"),
])
def test_bad_where_filters_are_refused_before_any_sql(articles, where, message):
    conn, config = articles
    with pytest.raises(InvalidSearchError, match=re.escape(message)):
        search(conn, config, QUERIES[0], where=where)


@pytest.mark.parametrize("where", [
    {"author_id": 7},
    {"author_id": {"in": [7]}},
    {"published": "2024-01-08", "author_id": {"gte": 0, "lt": 40}},
    {"published": None, "author_id": [10, 30, 50, 70, 90]},
    {"title": {"ne": "title 0"}, "published": {"is_null": False}, "author_id": {"not_in":
     list(range(2, 100))}},
], ids=["eq-1pct", "in-1pct", "range-and-eq", "null-and-in", "ne-notnull-notin"])
def test_column_filters_inside_the_candidate_scan_return_k_rows_with_recall(articles, where):
    conn, config = articles
    recalls = []
    for query in QUERIES:
        found = search(conn, config, query, k=10, where=where)
        truth = exact_search(conn, config, query, k=10, where=where)
        assert len(truth) == 10
        assert len(found) == 10
        recalls.append(_recall(found, truth))
    # Every returned row matches: the filter was applied, not just ordered around.
    checked = exact_search(conn, config, QUERIES[0], k=1000, where=where)
    matching = {r.id for r in checked}
    assert {r.id for r in search(conn, config, QUERIES[0], k=10, where=where)} <= matching
    print(f"\nwhere {where}: recall@10 {np.mean(recalls):.3f} over {len(QUERIES)} queries")
    assert np.mean(recalls) >= 0.95


def test_a_one_percent_filter_through_the_hnsw_index_keeps_k_rows_and_recall(articles):
    """The planner may sort 100 matching rows exactly at this size; at scale it walks the
    index, so the index path is forced here and must still fill k rows from the 1%."""
    conn, config = articles
    where = {"author_id": 7}
    recalls = []
    for query in QUERIES:
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            conn.execute("SET LOCAL enable_sort = off")
            plan = explain(conn, config, query, k=10, where=where, analyze=True, as_json=True)
            found = search(conn, config, query, k=10, where=where)
        [scan] = index_scans(plan, INDEX)
        assert "author_id" in scan.get("Filter", "")
        assert scan["Rows Removed by Filter"] > 0  # the scan walked past other authors' rows
        assert len(found) == 10 and all(r.author_id == 7 for r in found)
        recalls.append(_recall(found, exact_search(conn, config, query, k=10, where=where)))
    print(f"\n1% filter through HNSW (forced): recall@10 {np.mean(recalls):.3f}")
    assert np.mean(recalls) >= 0.95


def test_results_carry_the_tables_own_columns(articles):
    conn, config = articles
    [first] = search(conn, config, QUERIES[1], k=1)
    assert set(first.as_dict()) == {"id", "title", "body", "author_id", "published", "distance"}
    assert first.title == first["title"] == f"title {first.id - 1}"
    with pytest.raises(AttributeError, match="no column 'content'"):
        _ = first.content


def test_the_sql_function_takes_named_arguments_and_returns_the_tables_columns(articles):
    conn, config = articles
    row = conn.execute(
        "SELECT * FROM mrl_search_articles(query_embedding => %s, match_count => 3)",
        (QUERIES[2],))
    names = [d.name for d in row.description]
    assert names == ["id", "title", "body", "author_id", "published", "distance"]
    rows = row.fetchall()
    truth = search(conn, config, QUERIES[2], k=3)
    assert [r[0] for r in rows] == [r.id for r in truth]


def test_the_sql_function_filters_columns_inside_the_scan(articles):
    conn, config = articles
    recalls = []
    for query in QUERIES:
        rows = conn.execute(
            "SELECT id, author_id FROM mrl_search_articles("
            "query_embedding => %s, match_count => 10, filter => '{\"author_id\": 7}')",
            (query,)).fetchall()
        assert len(rows) == 10 and {r[1] for r in rows} == {7}
        truth = exact_search(conn, config, query, k=10, where={"author_id": 7})
        recalls.append(len({r[0] for r in rows} & {r.id for r in truth}) / 10)
    print(f"\nSQL function, 1% filter: recall@10 {np.mean(recalls):.3f}")
    assert np.mean(recalls) >= 0.95


@pytest.mark.parametrize("key_type", ["uuid", "text", "composite"])
def test_keys_of_any_type_and_composite_keys_join_back(conn, key_type):
    vectors = make_corpus(500, 32, seed=5).embeddings
    if key_type == "composite":
        conn.execute("CREATE TABLE notes (shelf int, slot int, embedding vector(32), "
                     "PRIMARY KEY (shelf, slot))")
        keys: list[Any] = [(i // 50, i % 50) for i in range(500)]
    else:
        conn.execute(f"CREATE TABLE notes (id {key_type} PRIMARY KEY, embedding vector(32))")
        keys = [(str(uuid.UUID(int=i + 1)) if key_type == "uuid" else f"n-{i}",)
                for i in range(500)]
    columns = ["shelf", "slot"] if key_type == "composite" else ["id"]
    insert = sql.SQL("INSERT INTO notes ({}, embedding) VALUES ({}, %s)").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() for _ in columns))
    with conn.cursor() as cur:
        cur.executemany(insert, [(*k, v) for k, v in zip(keys, vectors, strict=True)])
    config = table_config(conn, "notes", prefix_dim=16)
    adopt_table(conn, config)
    [best] = search(conn, config, vectors[123], k=1)
    assert tuple(best.row[c] for c in config.key) == tuple(
        uuid.UUID(k) if key_type == "uuid" else k for k in keys[123])
    if key_type == "uuid":
        found = search(conn, config, vectors[0], k=5, where={"id": [keys[7][0], keys[9][0]]})
        assert {str(r.id) for r in found} == {keys[7][0], keys[9][0]}


def test_a_halfvec_embedding_column_is_searched_with_a_halfvec_query(conn):
    vectors = make_corpus(800, 64, seed=8).embeddings
    conn.execute("CREATE TABLE halves (id int PRIMARY KEY, embedding halfvec(64))")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO halves VALUES (%s, %s::vector::halfvec)",
                        list(enumerate(vectors)))
    config = table_config(conn, "halves", prefix_dim=16)
    assert config.embedding_type == "halfvec"
    adopt_table(conn, config)
    conn.execute("ANALYZE halves")
    found = search(conn, config, vectors[42], k=5)
    assert found[0].id == 42 and found[0].distance == pytest.approx(0, abs=1e-3)
    assert [r.id for r in found] == [r.id for r in exact_search(conn, config, vectors[42], k=5)]
    rows = conn.execute("SELECT id FROM mrl_search_halves(%s, 5)", (vectors[42],)).fetchall()
    assert rows[0][0] == 42


def test_adopting_twice_keeps_the_index_and_release_leaves_every_row(conn):
    vectors = make_corpus(300, 32, seed=9).embeddings
    conn.execute("CREATE TABLE kept (id int PRIMARY KEY, embedding vector(32))")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO kept VALUES (%s, %s)", list(enumerate(vectors)))
    config = table_config(conn, "kept", prefix_dim=8)
    first, second = adopt_table(conn, config), adopt_table(conn, config)
    assert first.index is not None and first.index.rows == 300
    assert second.index is None and "already there" in second.lines()[0]
    assert release_table(conn, config) is True
    assert conn.execute("SELECT count(*) FROM kept").fetchone()[0] == 300
    assert conn.execute("SELECT to_regclass('kept_embedding_prefix_hnsw')").fetchone()[0] is None
    assert conn.execute("SELECT to_regprocedure(%s)", (
        f"mrl_search_kept({SEARCH_FUNCTION_ARGS})",)).fetchone()[0] is None


def test_a_description_for_mrl_pgs_own_layout_refuses_custom_columns():
    with pytest.raises(InvalidConfigError, match="table_config"):
        TableConfig("docs", embedding_column="vec")
    with pytest.raises(InvalidConfigError, match="expression index"):
        _ = replace(TableConfig("docs"), prefix_column=None, adopted=True,
                    key=("id",)).stored_prefix_column


def test_tune_measures_an_adopted_table_with_a_column_filter_and_search_uses_it(conn):
    vectors = make_corpus(4000, 64, seed=12).embeddings
    conn.execute("CREATE TABLE tuned (id text PRIMARY KEY, shelf int, embedding vector(64))")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO tuned VALUES (%s, %s, %s)",
                        [(f"r{i}", i % 10, v) for i, v in enumerate(vectors)])
    conn.execute("ANALYZE tuned")
    config = table_config(conn, "tuned", prefix_dim=16)
    adopt_table(conn, config)
    with pytest.raises(InvalidSearchError, match="no filterable column 'ghost'"):
        tune(conn, config, TuneOptions(queries=5, where={"ghost": 1}))
    assert load_tuning(conn, config) == DEFAULT_TUNING  # nothing saved by the refusal
    report = tune(conn, config, TuneOptions(queries=20, rounds=1, oversample=(2, 4),
                                            ef_search=(40,), where={"shelf": {"lt": 5}},
                                            target_recall=0.5))
    assert report.saved and report.recommended is not None, [r.plan for r in report.results]
    assert set(report.recommended.recall) == {"all", "filtered"}
    assert load_tuning(conn, config) == report.recommended.tuning


def test_the_sql_function_filter_names_columns_and_refuses_unknown_ones(articles):
    conn, _ = articles
    call = ("SELECT id, author_id, published FROM mrl_search_articles("
            "query_embedding => %s, match_count => 10, filter => %s::jsonb)")
    rows = conn.execute(call, (QUERIES[3], '{"published": null, "author_id": 10}')).fetchall()
    assert len(rows) == 10 and {(r[1], r[2]) for r in rows} == {(10, None)}
    rows = conn.execute(call, (QUERIES[3], '{"published": "2024-01-08"}')).fetchall()
    assert len(rows) == 10 and {r[2] for r in rows} == {date(2024, 1, 8)}
    with pytest.raises(psycopg.errors.UndefinedColumn, match="cannot filter on: ghost"):
        conn.execute(call, (QUERIES[3], '{"ghost": 1, "author_id": 2}'))


def test_describe_table_finds_the_tenant_by_the_unique_key_not_by_an_extra_text_column(conn):
    install(conn, TableConfig("owned", full_dim=16, prefix_dim=4, tenant_column="org"))
    install(conn, TableConfig("plain", full_dim=16, prefix_dim=4))
    conn.execute("ALTER TABLE plain ADD COLUMN title text")  # a model's own column
    assert describe_table(conn, "owned").tenant_column == "org"
    described = describe_table(conn, "plain")
    assert described.tenant_column is None
    assert described == TableConfig("plain", full_dim=16, prefix_dim=4)
