"""The SQLAlchemy ORM integration: the model's DDL, Alembic, and search through a Session."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from sqlalchemy import (
    Engine,
    ForeignKey,
    Index,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from mrl_pg import TableConfig, install, truncate_and_normalize
from mrl_pg import exact_search as psycopg_exact_search
from mrl_pg import search as psycopg_search
from mrl_pg.db import create_async_engine, create_engine
from mrl_pg.errors import (
    DimensionMismatchError,
    InvalidConfigError,
    InvalidSearchError,
    InvalidVectorError,
)
from mrl_pg.migrate import VERSION_TABLE, include_name, upgrade
from mrl_pg.schema.tables import render
from mrl_pg.sqlalchemy._search import (
    MrlMixin,
    exact_search,
    exact_search_async,
    exact_search_select,
    mrl_mixin,
    search,
    search_async,
    search_select,
    table_args,
)
from mrl_pg.statement.prefix import hnsw_index_ddl, prefix_expression
from mrl_pg.statement.tuning import TUNING_TABLE
from tests.catalog import describe_table
from tests.fix_corpus import copy_rows
from tests.planinfo import candidate_limit, index_scans

ROWS = 3000
DIM = 256
PREFIX = 64


def make_model(config: TableConfig) -> tuple[type[DeclarativeBase], Any]:
    class Base(DeclarativeBase):
        pass

    class Document(mrl_mixin(config), Base):  # type: ignore[misc]
        pass

    return Base, Document


@dataclass
class Loaded:
    config: TableConfig
    base: type[DeclarativeBase]
    model: Any
    engine: Engine
    embeddings: npt.NDArray[np.float32]
    queries: npt.NDArray[np.float32]
    conn: psycopg.Connection[Any]


@pytest.fixture
def engine(schema_dsn: str) -> Iterator[Engine]:
    engine = create_engine(schema_dsn)
    yield engine
    engine.dispose()


@pytest.fixture
def loaded(schema: str, conn: psycopg.Connection[Any], engine: Engine) -> Loaded:
    """3,000 random 256-d rows (prefix 64) in the test's schema; one in 20 has lang 'fr'."""
    config = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    install(conn, config, with_search_function=False)
    conn.execute(sql.SQL("DROP INDEX {}").format(config.qualified(config.hnsw_index_name)))
    rng = np.random.default_rng(7)
    embeddings = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    metadata = [{"lang": "fr" if i % 20 == 0 else "en", "n": i} for i in range(ROWS)]
    with conn.transaction():
        copy_rows(conn, config, embeddings, [f"doc-{i}" for i in range(ROWS)], metadata)
    conn.execute(hnsw_index_ddl(config))  # one bulk build is faster than 3,000 inserts
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    base, model = make_model(config)
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    return Loaded(config, base, model, engine, embeddings, queries, conn)


def row_number(external_id: str) -> int:
    return int(external_id.removeprefix("doc-"))


# --- DDL ---------------------------------------------------------------------------------


@pytest.fixture
def other_schema(conn: psycopg.Connection[Any], schema: str) -> Iterator[str]:
    name = f"{schema}_b"
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def test_create_all_builds_the_same_table_as_install_down_to_the_catalog(
    conn, engine, schema, other_schema
):
    settings = {"full_dim": 96, "prefix_dim": 32, "hnsw_m": 8, "hnsw_ef_construction": 40}
    orm_config = TableConfig("docs", schema=schema, **settings)
    base, _ = make_model(orm_config)
    base.metadata.create_all(engine)
    install(conn, TableConfig("docs", schema=other_schema, **settings),
            with_search_function=False)

    from_orm = describe_table(conn, schema, "docs")
    from_install = describe_table(conn, other_schema, "docs")
    assert from_orm == from_install
    assert "halfvec_cosine_ops) WITH (m='8', ef_construction='40')" in str(from_orm["indexes"])
    named = {name for name, _ in from_orm["constraints"] if not name.endswith("_not_null")}
    assert named == {"docs_pkey", "docs_external_id_key", "docs_embedding_nonzero",
                     "docs_embedding_prefix_nonzero", "docs_metadata_object"}


def test_user_columns_and_indexes_add_to_the_mrl_ones_and_orm_inserts_fill_the_prefix(
    engine, schema
):
    config = TableConfig("docs", full_dim=8, prefix_dim=4, schema=schema)

    class Base(DeclarativeBase):
        pass

    class Document(MrlMixin, Base):
        mrl_config = config
        __table_args__ = table_args(config, Index("docs_title", "title"))
        title: Mapped[str | None]

    Base.metadata.create_all(engine)
    assert {i["name"] for i in inspect(engine).get_indexes("docs", schema=schema)} == {
        "docs_title", config.hnsw_index_name, config.metadata_index_name,
        config.external_id_key_name}
    assert [c.name for c in Document.__table__.columns] == [
        "id", "external_id", "content", "metadata", "embedding", "embedding_prefix",
        "created_at", "title",
    ]
    vector = [3.0, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    with Session(engine) as session:
        session.add(Document(external_id="a", embedding=vector, title="hello"))
        session.commit()
        doc = session.scalars(select(Document)).one()
        assert doc.id == 1 and doc.meta == {} and doc.created_at is not None
        np.testing.assert_allclose(doc.embedding_prefix, truncate_and_normalize(vector, 4),
                                   atol=1e-3)
        [(found, distance)] = search(session, Document, vector, k=1)
        assert found is doc and found.title == "hello" and distance == pytest.approx(0, abs=1e-6)


def test_a_model_without_a_table_config_is_refused_by_name():
    class Base(DeclarativeBase):
        pass

    with pytest.raises(InvalidConfigError, match="Broken needs a TableConfig as mrl_config"):
        class Broken(MrlMixin, Base):
            pass
    with pytest.raises(InvalidConfigError, match="expected a TableConfig"):
        mrl_mixin("docs")


# --- Alembic -----------------------------------------------------------------------------


def autogenerate_diffs(engine: Engine, metadata: Any, **opts: Any) -> list[Any]:
    # A computed expression that differs is only a warning in Alembic: make it fail.
    with warnings.catch_warnings(), engine.connect() as connection:
        warnings.simplefilter("error")
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True, **opts}
        )
        return list(compare_metadata(context, metadata))


def test_alembic_check_finds_nothing_to_change_on_a_database_built_by_our_migrations(
    fresh_database,
):
    upgrade(fresh_database)

    class Base(DeclarativeBase):
        pass

    class Document(MrlMixin, Base):
        mrl_config = TableConfig()

    engine = create_engine(fresh_database)
    try:
        assert autogenerate_diffs(engine, Base.metadata, include_name=include_name) == []
        # Without the filter the module docstring recommends, Alembic would drop our history.
        unfiltered = autogenerate_diffs(engine, Base.metadata)
        assert sorted((d[0], d[1].name) for d in unfiltered) == [
            ("remove_table", VERSION_TABLE), ("remove_table", TUNING_TABLE)]
    finally:
        engine.dispose()


def test_alembic_check_finds_nothing_to_change_on_an_installed_table_in_a_schema(
    conn, database_dsn, schema
):
    config = TableConfig("docs", full_dim=96, prefix_dim=32, schema=schema, hnsw_m=8,
                         hnsw_ef_construction=40)
    install(conn, config)
    base, _ = make_model(config)

    def only_this_schema(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        return (type_ != "schema" or name == schema) and include_name(name, type_, parent_names)

    # search_path left at public, so the test's schema is not the default one
    engine = create_engine(database_dsn)
    try:
        diffs = autogenerate_diffs(engine, base.metadata, include_schemas=True,
                                   include_name=only_this_schema)
        assert diffs == []
        # The comparison is not blind: another prefix length is reported.
        other, _ = make_model(TableConfig("docs", full_dim=96, prefix_dim=31, schema=schema))
        with pytest.raises(UserWarning, match="Computed default on docs.embedding_prefix"):
            autogenerate_diffs(engine, other.metadata, include_schemas=True,
                               include_name=only_this_schema)
    finally:
        engine.dispose()


# --- The statement -----------------------------------------------------------------------


def test_search_select_orders_candidates_by_exactly_the_indexed_expression():
    _, model = make_model(TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX))
    compiled = str(search_select(model, np.ones(DIM), k=5, offset=5).compile(
        dialect=postgresql.dialect()))
    query_prefix = render(prefix_expression(sql.SQL("CAST(%(mrl_query_1)s AS vector)"), PREFIX))
    assert "WITH candidates AS MATERIALIZED" in compiled
    assert f"ORDER BY docs.embedding_prefix <=> {query_prefix}" in compiled
    # Candidates carry id and full distance only; the best are joined back to the table.
    assert "(SELECT docs.id AS id, docs.embedding <=> CAST(" in compiled
    assert "best AS MATERIALIZED" in compiled and "JOIN found ON docs.id = found.id" in compiled
    assert "ORDER BY found.distance, found.id" in compiled and "OFFSET" in compiled
    exact = str(exact_search_select(model, np.ones(DIM)).compile(dialect=postgresql.dialect()))
    assert "candidates" not in exact and "embedding_prefix <=>" not in exact


def test_explain_of_the_compiled_select_shows_the_hnsw_index_and_a_full_pool(loaded):
    statement = search_select(loaded.model, loaded.queries[0], k=20, oversample=8)
    compiled = statement.compile(dialect=postgresql.dialect(),
                                 compile_kwargs={"literal_binds": True})
    with Session(loaded.engine) as session:
        # The statement's own execution options carry its settings into the EXPLAIN.
        plan = session.connection().exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}",
            execution_options=statement.get_execution_options()).scalar_one()
    scans = index_scans(plan, loaded.config.hnsw_index_name)
    assert len(scans) == 1 and scans[0]["Node Type"] == "Index Scan"
    # 160 candidates although hnsw.ef_search defaults to 40: the settings took effect.
    assert candidate_limit(plan)["Actual Rows"] == 160


# --- Search ------------------------------------------------------------------------------


def test_search_returns_model_instances_nearest_first_with_the_psycopg_search_ids(loaded):
    model, config = loaded.model, loaded.config
    with Session(loaded.engine) as session:
        for query in loaded.queries:
            rows = search(session, model, query, k=10)
            expected = psycopg_search(loaded.conn, config, query, k=10)
            assert all(isinstance(doc, model) for doc, _ in rows)
            distances = [d for _, d in rows]
            assert distances == sorted(distances) and len(rows) == 10
            assert [doc.id for doc, _ in rows] == [r.id for r in expected]
            assert distances == pytest.approx([r.distance for r in expected], abs=1e-9)
            # distance is cosine distance on the full vectors
            stored = loaded.embeddings[[row_number(doc.external_id) for doc, _ in rows]]
            cosine = stored @ query / np.linalg.norm(stored, axis=1) / np.linalg.norm(query)
            np.testing.assert_allclose(distances, 1 - cosine, atol=1e-5)


def test_exact_search_returns_the_numpy_brute_force_neighbours(loaded):
    norms = np.linalg.norm(loaded.embeddings, axis=1)
    with Session(loaded.engine) as session:
        for query in loaded.queries[:3]:
            truth = np.argsort(-(loaded.embeddings @ query) / norms)[:10]
            rows = exact_search(session, loaded.model, query, k=10)
            assert [row_number(doc.external_id) for doc, _ in rows] == truth.tolist()
            expected = psycopg_exact_search(loaded.conn, loaded.config, query, k=10)
            assert [doc.id for doc, _ in rows] == [r.id for r in expected]


def test_a_where_on_a_model_column_filters_and_still_fills_k_rows(loaded):
    model = loaded.model
    with Session(loaded.engine) as session:
        for query in loaded.queries:
            rows = search(session, model, query, k=10, where=[model.meta.contains({"lang": "fr"})])
            expected = psycopg_search(loaded.conn, loaded.config, query, k=10,
                                             filter={"lang": "fr"})
            # 5% of rows match: only the iterative scan finds 10 of them through the index.
            assert len(rows) == 10 and all(doc.meta["lang"] == "fr" for doc, _ in rows)
            assert [doc.id for doc, _ in rows] == [r.id for r in expected]
            below = search(session, model, query, k=5, where=[model.id <= 100])
            assert len(below) == 5 and all(doc.id <= 100 for doc, _ in below)


def test_search_select_composes_with_a_join_to_a_user_table(loaded):
    base, model = loaded.base, loaded.model

    class Note(base):
        __tablename__ = "notes"
        __table_args__ = {"schema": loaded.config.schema}
        document_id: Mapped[int] = mapped_column(ForeignKey(model.id), primary_key=True)
        note: Mapped[str]

    Note.__table__.create(loaded.engine)
    with Session(loaded.engine) as session:
        session.execute(insert(Note).from_select(
            ["document_id", "note"],
            select(model.id, func.concat("note ", model.id)).where(model.id % 2 == 0)))
        query = loaded.queries[0]
        statement = search_select(model, query, k=10, oversample=8)
        candidates = statement.selected_columns
        statement = statement.join(Note, Note.document_id == candidates.id).add_columns(
            Note.note)
        joined = session.execute(statement).all()
        plain = search(session, model, query, k=80, oversample=1)
    assert joined and all(note == f"note {doc.id}" for doc, _, note in joined)
    # The join keeps only the even candidates, in the same order as the unjoined search.
    even = [doc.id for doc, _ in plain if doc.id % 2 == 0]
    assert [doc.id for doc, _, _ in joined] == even[:len(joined)]


def test_page_two_equals_rows_k_to_2k_of_a_search_for_2k(loaded):
    with Session(loaded.engine) as session:
        for query in loaded.queries[:3]:
            page_two = search(session, loaded.model, query, k=10, offset=10)
            first_twenty = search(session, loaded.model, query, k=20)
            assert [d.id for d, _ in page_two] == [d.id for d, _ in first_twenty[10:]]
            assert len(page_two) == 10


def test_a_search_leaves_the_sessions_transaction_settings_as_they_were(loaded):
    with Session(loaded.engine) as session:
        session.execute(text("SET LOCAL hnsw.ef_search = 77"))
        search(session, loaded.model, loaded.queries[0], k=20, oversample=8)
        exact_search(session, loaded.model, loaded.queries[0], k=5)
        assert session.execute(text("SHOW hnsw.ef_search")).scalar_one() == "77"
        assert session.execute(text("SHOW enable_indexscan")).scalar_one() == "on"
        assert session.execute(text("SHOW plan_cache_mode")).scalar_one() == "auto"
        assert session.execute(text("SHOW hnsw.iterative_scan")).scalar_one() == "off"


def test_a_composed_search_select_run_on_its_own_returns_k_rows_above_ef_search(loaded):
    """k=100 needs a pool of 800: without its settings the HNSW scan would stop at 40."""
    statement = search_select(loaded.model, loaded.queries[1], k=100, oversample=8)
    with Session(loaded.engine) as session:
        rows = session.execute(statement).all()
    assert len(rows) == 100


def test_repeated_searches_are_never_prepared_so_never_use_a_generic_plan(loaded):
    with Session(loaded.engine) as session:
        # Even a connection told to prefer generic plans gets custom ones for searches.
        session.execute(text("SET plan_cache_mode = force_generic_plan"))
        session.commit()
        for i in range(12):
            search(session, loaded.model, loaded.queries[i % 5], k=10)
            session.commit()
        prepared = session.execute(text(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%candidates AS MATERIALIZED%'")).all()
        session.execute(text("RESET plan_cache_mode"))
        session.commit()
    # psycopg prepares a statement run 5 times, and a prepared statement may keep a
    # generic plan that ignores the pool; the ORM search is sent unprepared.
    assert prepared == []


async def test_async_search_returns_the_same_rows_as_sync(loaded, schema_dsn):
    from sqlalchemy.ext.asyncio import AsyncSession

    engine = create_async_engine(schema_dsn)
    try:
        with Session(loaded.engine) as sync:
            expected = [[d.id for d, _ in search(sync, loaded.model, q, k=10, offset=5)]
                        for q in loaded.queries]
            expected_exact = [d.id for d, _ in exact_search(sync, loaded.model,
                                                            loaded.queries[0])]
        async with AsyncSession(engine) as session:
            found = [[d.id for d, _ in await search_async(session, loaded.model, q, k=10,
                                                          offset=5)]
                     for q in loaded.queries]
            exact = await exact_search_async(session, loaded.model, loaded.queries[0])
    finally:
        await engine.dispose()
    assert found == expected
    assert [d.id for d, _ in exact] == expected_exact


def test_an_autocommit_session_gets_the_settings_for_the_search_and_nothing_after(loaded):
    autocommit = loaded.engine.execution_options(isolation_level="AUTOCOMMIT")
    with Session(autocommit) as session:
        rows = search(session, loaded.model, loaded.queries[2], k=100, oversample=8)
        assert len(rows) == 100
        assert session.execute(text("SHOW hnsw.ef_search")).scalar_one() == "40"
        assert session.execute(text("SELECT pg_current_xact_id_if_assigned() IS NULL"
                                     )).scalar_one()


# --- Bad input ---------------------------------------------------------------------------

BAD_VECTORS = [
    (np.ones(DIM - 1), DimensionMismatchError, f"has {DIM - 1} dimensions, expected {DIM}"),
    (np.r_[np.nan, np.ones(DIM - 1)], InvalidVectorError, "NaN"),
    (np.zeros(DIM), InvalidVectorError, "zero vector"),
    (np.r_[np.zeros(PREFIX), np.ones(DIM - PREFIX)], InvalidVectorError,
     f"first {PREFIX} dimensions"),
]


@pytest.mark.parametrize(("vector", "error", "message"), BAD_VECTORS)
async def test_bad_query_vectors_raise_before_any_sql_is_sent(vector, error, message):
    from sqlalchemy.ext.asyncio import AsyncSession

    _, model = make_model(TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX))
    # Sessions bound to nothing: reaching SQL would raise UnboundExecutionError instead.
    with pytest.raises(error, match=message):
        search(Session(), model, vector)
    with pytest.raises(error, match=message):
        exact_search(Session(), model, vector)
    with pytest.raises(error, match=message):
        await search_async(AsyncSession(), model, vector)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be between 1 and 1000, got 0"),
        ({"oversample": 0}, "oversample must be at least 1"),
        ({"offset": -1}, "offset must be a non-negative integer, got -1"),
        ({"k": 10, "offset": 995}, "offset \\+ k must be at most 1000, got 995 \\+ 10"),
        ({"max_scan_tuples": 0}, "max_scan_tuples must be positive"),
    ],
)
def test_bad_search_arguments_are_named_before_any_sql_is_sent(kwargs, message):
    _, model = make_model(TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX))
    with pytest.raises(InvalidSearchError, match=message):
        search(Session(), model, np.ones(DIM), **kwargs)
