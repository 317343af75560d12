"""Searches on tables as users have them: pools the walk cannot fill, caches that go stale.

Issue 16, items 7 and 8. The oracle is numpy over the same rows, never our own SQL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from pgvector.sqlalchemy import VECTOR
from psycopg import sql
from sqlalchemy import BigInteger, Integer, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import mrl_pg
import mrl_pg.sqlalchemy
from mrl_pg import TableConfig, install
from mrl_pg.db import create_engine
from mrl_pg.index.adopt import adopt_table, release_table
from mrl_pg.index.saved_tuning import TuningRecord, save_tuning
from mrl_pg.psycopg._search import explain
from mrl_pg.schema.catalog import table_config
from mrl_pg.statement.prefix import hnsw_index_ddl
from mrl_pg.statement.tuning import TUNING_TABLE, SearchTuning
from tests.fix_corpus import copy_rows


def unit(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def numpy_top(data: npt.NDArray[np.float32], query: npt.NDArray[np.float32], k: int,
              mask: npt.NDArray[np.bool_] | None = None) -> list[int]:
    """Row numbers (0-based) of the k nearest rows by cosine among those ``mask`` keeps."""
    sims = unit(data) @ unit(query)
    if mask is not None:
        sims = np.where(mask, sims, -np.inf)
    order = np.argsort(-sims, kind="stable")[:k]
    return [int(i) for i in order if np.isfinite(sims[i])]


# --- item 8: pools the walk cannot fill ---------------------------------------------------

def _candidate_rows(plan: Any) -> int:
    def walk(node: dict[str, Any]) -> Any:
        yield node
        for child in node.get("Plans", []):
            yield from walk(child)

    for node in walk(plan[0]["Plan"]):
        if node.get("Subplan Name") == "CTE candidates":
            return round(node["Actual Rows"] * node["Actual Loops"])
    raise AssertionError("no candidate scan in the plan")


def test_a_30000_row_pool_fills_at_postgres_default_work_mem(schema, conn):
    """pgvector stops an iterative scan at work_mem x hnsw.scan_mem_multiplier: at 4MB
    a 30,000 pool came back with 21,848 candidates until the search set the multiplier."""
    config = TableConfig("wide", full_dim=128, prefix_dim=32, schema=schema)
    install(conn, config, with_search_function=False)
    conn.execute(sql.SQL("DROP INDEX {}").format(config.qualified(config.hnsw_index_name)))
    data = np.random.default_rng(8).standard_normal((40_000, 128)).astype(np.float32)
    copy_rows(conn, config, data, [f"w{i}" for i in range(len(data))])
    conn.execute("SET maintenance_work_mem = '256MB'")
    conn.execute(hnsw_index_ddl(config))
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    conn.execute("SET work_mem = '4MB'")
    plan = explain(conn, config, data[0], k=1000, oversample=30, analyze=True, as_json=True)
    assert _candidate_rows(plan) == 30_000
    assert conn.execute("SHOW work_mem").fetchone() == ("4MB",)


@pytest.fixture
def priced(schema: str, conn: psycopg.Connection[Any]) -> tuple[TableConfig, Any]:
    """An adopted 6,000-row table where 7 rows cost less than 1.2."""
    conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, price integer NOT NULL, "
                 "embedding vector(64))")
    data = np.random.default_rng(9).standard_normal((6000, 64)).astype(np.float32)
    price = np.full(len(data), 50)
    cheap = np.random.default_rng(10).choice(len(data), 7, replace=False)
    price[cheap] = 1
    with conn.cursor().copy("COPY products FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int4", "vector"])
        for i, vector in enumerate(data):
            copy.write_row((i, int(price[i]), vector))
    conn.execute("ANALYZE products")
    config = table_config(conn, "products", prefix_dim=16)
    adopt_table(conn, config)
    return config, (data, price)


def test_a_filter_the_walk_cannot_satisfy_still_returns_every_matching_row(priced, conn,
                                                                            schema_dsn):
    config, (data, price) = priced
    query = np.random.default_rng(11).standard_normal(64).astype(np.float32)
    truth = numpy_top(data, query, 10, mask=price < 1.2)
    assert len(truth) == 7
    # The walk may visit only 50 tuples: it comes back with next to nothing.
    rows = mrl_pg.search(conn, config, query, k=10, where={"price": {"lt": 2}},
                         max_scan_tuples=50)
    assert [r.id for r in rows] == truth
    # k = 1: the walk finds one cheap row or two, enough for k but not the pool of 8;
    # a pool that did not fill is replaced too, so the one row is the true nearest.
    for seed in range(5):
        q = np.random.default_rng(100 + seed).standard_normal(64).astype(np.float32)
        [nearest] = mrl_pg.search(conn, config, q, k=1, where={"price": {"lt": 2}},
                                  max_scan_tuples=50)
        assert nearest.id == numpy_top(data, q, 1, mask=price < 1.2)[0]

    class Base(DeclarativeBase):
        pass

    class Product(Base):
        __tablename__ = "products"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        price: Mapped[int] = mapped_column(Integer)
        embedding: Mapped[Any] = mapped_column(VECTOR(64))

    engine = create_engine(schema_dsn)
    try:
        with Session(engine) as session:
            found = mrl_pg.sqlalchemy.search(session, Product.embedding, query, k=10,
                                             where=[Product.price < 1.2], max_scan_tuples=50)
        assert [p.id for p, _ in found] == truth
    finally:
        engine.dispose()


# --- item 7: caches that go stale ------------------------------------------------------------

def test_a_connection_that_searched_before_the_tuning_table_went_away_still_searches(
        schema, conn):
    config = TableConfig("docs", full_dim=32, prefix_dim=8, schema=schema)
    install(conn, config)
    data = np.random.default_rng(12).standard_normal((300, 32)).astype(np.float32)
    copy_rows(conn, config, data, [f"d{i}" for i in range(len(data))])
    save_tuning(conn, config, TuningRecord(SearchTuning(oversample=2, ef_search=40, k=10)))
    assert len(mrl_pg.search(conn, config, data[0], k=10)) == 10
    conn.execute(sql.SQL("DROP TABLE {}").format(config.qualified(TUNING_TABLE)))  # a downgrade
    rows = mrl_pg.search(conn, config, data[1], k=10)  # the defaults now, no error
    assert len(rows) == 10 and rows[0].id == 2  # the query's own row (ids count from 1)


def test_a_pooled_orm_connection_follows_a_readoption_with_another_prefix(conn, schema_dsn):
    conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, embedding vector(64))")
    data = np.random.default_rng(13).standard_normal((2000, 64)).astype(np.float32)
    with conn.cursor().copy("COPY notes FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "vector"])
        for i, vector in enumerate(data):
            copy.write_row((i, vector))
    conn.execute("ANALYZE notes")
    adopt_table(conn, table_config(conn, "notes", prefix_dim=32))

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        embedding: Mapped[Any] = mapped_column(VECTOR(64))

    engine = create_engine(schema_dsn, pool_size=1, max_overflow=0)
    sent: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "candidates AS MATERIALIZED" in statement:
            sent.append(statement)

    try:
        with Session(engine) as session:
            first = mrl_pg.sqlalchemy.search(session, Note.embedding, data[0], k=5)
        assert "::halfvec(32)" in sent[-1]
        release_table(conn, table_config(conn, "notes", prefix_dim=32))
        adopt_table(conn, table_config(conn, "notes", prefix_dim=16))
        with Session(engine) as session:  # the same pooled connection
            again = mrl_pg.sqlalchemy.search(session, Note.embedding, data[0], k=5)
        assert "::halfvec(16)" in sent[-1]
        assert [n.id for n, _ in again][0] == [n.id for n, _ in first][0] == 0
    finally:
        engine.dispose()


# --- item 9: the plan for medium and tiny filters, at a realistic size ---------------------

PRODUCTS, PRODUCT_DIM = 30_000, 1536
CATEGORIES = ("books", "toys", "games", "tools", "food")


@pytest.fixture(scope="module")
def catalogue(database_dsn: str) -> Any:
    """30,000 x 1536 adopted rows (vectors in TOAST), B-trees on category and price."""
    from mrl_pg.bench.synthetic import make_corpus, make_queries
    from mrl_pg.db import configure_connection

    schema = "plans_" + np.random.default_rng().bytes(4).hex()
    data = make_corpus(PRODUCTS, PRODUCT_DIM, seed=5).embeddings
    category = np.array([CATEGORIES[i % 5] for i in range(PRODUCTS)])
    price = np.arange(PRODUCTS) % 100
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        configure_connection(conn)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(schema)))
        conn.execute(f"CREATE TABLE products (id bigint PRIMARY KEY, category text NOT NULL, "
                     f"price integer NOT NULL, embedding vector({PRODUCT_DIM}))")
        with conn.cursor().copy("COPY products FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "int4", "vector"])
            for i, vector in enumerate(data):
                copy.write_row((i, str(category[i]), int(price[i]), vector))
        conn.execute("CREATE INDEX ON products (category)")
        conn.execute("CREATE INDEX ON products (price)")
        conn.execute("ANALYZE products")
        config = table_config(conn, "products")
        adopt_table(conn, config, maintenance_work_mem="1GB")
    yield config, data, category, price, make_queries(5, PRODUCT_DIM, seed=6), database_dsn
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _first_stage(plan: Any) -> tuple[str, str | None]:
    from mrl_pg.bench.rls import first_stage

    stage = first_stage(plan)
    return stage.kind, stage.index


@pytest.mark.slow
@pytest.mark.parametrize("k", [10, 20])
def test_a_filter_on_a_fifth_of_the_rows_walks_the_index_not_the_table(catalogue, k):
    config, data, category, _, queries, dsn = catalogue
    from mrl_pg.db import configure_connection

    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        plan = explain(conn, config, queries[0], k=k, where={"category": "books"},
                       analyze=True, as_json=True)
        assert _first_stage(plan) == ("hnsw", config.hnsw_index_name)
        found = [mrl_pg.search(conn, config, q, k=k, where={"category": "books"})
                 for q in queries]
    recalls = [len({r.id for r in rows} & set(numpy_top(data, q, k, mask=category == "books")))
               / k for rows, q in zip(found, queries, strict=True)]
    print(f"recall@{k} of the walk under a 20% filter: {np.mean(recalls):.3f}")
    assert np.mean(recalls) >= 0.8 and all(len(rows) == k for rows in found)


@pytest.mark.slow
def test_a_filter_on_sixty_rows_reads_its_btree_and_is_exact(catalogue):
    config, data, category, price, queries, dsn = catalogue
    from mrl_pg.db import configure_connection

    where = {"category": "books", "price": 5}
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        plan = explain(conn, config, queries[1], k=10, where=where, analyze=True, as_json=True)
        kind, index = _first_stage(plan)
        assert kind == "btree" and index is not None and "hnsw" not in index
        rows = mrl_pg.search(conn, config, queries[1], k=10, where=where)
    assert [r.id for r in rows] == numpy_top(
        data, queries[1], 10, mask=(category == "books") & (price == 5))
