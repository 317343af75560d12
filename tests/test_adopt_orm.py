"""The ORM on a user's own model: a table made without mrl_pg, adopted, then searched through
``Article.embedding``; and the MrlMixin with a tenant column."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pgvector import HalfVector
from pgvector.sqlalchemy import HALFVEC, VECTOR
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import (
    BigInteger,
    Engine,
    ForeignKey,
    Integer,
    Text,
    event,
    exists,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from mrl_pg import TableConfig, install
from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.db import configure_connection, create_async_engine, create_engine
from mrl_pg.errors import InvalidConfigError, InvalidSearchError
from mrl_pg.index.adopt import adopt_table
from mrl_pg.migrate import include_name
from mrl_pg.psycopg._search import exact_search as psycopg_exact_search
from mrl_pg.psycopg._search import search as psycopg_search
from mrl_pg.schema.catalog import table_config
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
)
from mrl_pg.statement.plans import uses_index
from mrl_pg.statement.stages import PREFIX_HNSW
from tests.catalog import describe_table

ROWS, DIM, PREFIX, AUTHORS = 5000, 384, 128, 100  # the product default's 1536/512 ratio
INDEX = "articles_embedding_prefix_hnsw"
QUERIES = make_queries(20, DIM, seed=21)


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    country: Mapped[str] = mapped_column(Text)


class Article(Base):
    """The user's own model: no mrl_pg mixin, nothing but pgvector's column type."""

    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    author_id: Mapped[int] = mapped_column(BigInteger, ForeignKey(Author.id))
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM))


def _dsn_in(database_dsn: str, schema: str) -> str:
    options = conninfo_to_dict(database_dsn).get("options") or ""
    return make_conninfo(database_dsn, options=f"{options} -c search_path={schema},public".strip())


def _copy(conn: psycopg.Connection[Any], statement: str, types: list[str],
          rows: Iterator[list[Any]]) -> None:
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


@pytest.fixture(scope="module")
def articles_dsn(database_dsn: str) -> Iterator[str]:
    """A schema with ``authors`` and ``articles`` made and filled without mrl_pg, then adopted.

    Built once for the module and only read by its tests (like the shared corpus).
    One author in ten is French; author ``a`` wrote every hundredth article.
    """
    schema = f"test_{uuid.uuid4().hex[:12]}"
    dsn = _dsn_in(database_dsn, schema)
    vectors = make_corpus(ROWS, DIM, seed=21).embeddings
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        conn.execute("CREATE TABLE authors (id bigint PRIMARY KEY, country text NOT NULL)")
        conn.execute("CREATE TABLE articles (id bigserial PRIMARY KEY, title text, body text, "
                     f"author_id bigint REFERENCES authors, embedding vector({DIM}))")
        _copy(conn, "COPY authors (id, country) FROM STDIN (FORMAT BINARY)", ["int8", "text"],
              iter([[a, "fr" if a % 10 == 3 else "de"] for a in range(AUTHORS)]))
        _copy(conn, "COPY articles (title, body, author_id, embedding) FROM STDIN "
              "(FORMAT BINARY)", ["text", "text", "int8", "vector"],
              iter([[f"title {i}", f"body {i}", i % AUTHORS, v] for i, v in enumerate(vectors)]))
        conn.execute("ANALYZE authors")
        conn.execute("ANALYZE articles")
        adopt_table(conn, table_config(conn, "articles", embedding="embedding",
                                                 prefix_dim=PREFIX))
    yield dsn
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def articles(articles_dsn: str) -> Iterator[tuple[Engine, psycopg.Connection[Any], TableConfig]]:
    engine = create_engine(articles_dsn)
    with psycopg.connect(articles_dsn, autocommit=True) as conn:
        configure_connection(conn)
        yield engine, conn, table_config(conn, "articles")
    engine.dispose()


def _recall(found: list[Any], truth: list[Any]) -> float:
    return len(set(found) & set(truth)) / len(truth)


def _report(label: str, recalls: list[float]) -> float:
    mean = float(np.mean(recalls))
    print(f"{label}: recall@10 {mean:.3f} over {len(recalls)} queries (min {min(recalls):.2f})")
    return mean


# --- The statement ---------------------------------------------------------------------------


def test_the_candidates_are_ordered_by_exactly_the_adopted_index_expression():
    config = TableConfig("articles", full_dim=DIM, prefix_dim=PREFIX, prefix_column=None,
                         adopted=True)
    compiled = str(search_select(Article.embedding, QUERIES[0], k=10, prefix_dim=PREFIX)
                   .compile(dialect=postgresql.dialect()))
    order = render(PREFIX_HNSW.order_by(config, sql.SQL("CAST(%(mrl_query_1)s AS vector)")))
    assert f'l2_normalize(subvector("embedding", 1, {PREFIX}))::halfvec({PREFIX}) <=> ' in order
    assert f"ORDER BY {order}" in compiled
    assert ("SELECT articles.id AS id, articles.embedding <=> CAST(CAST(%(mrl_query_1)s AS "
            f"vector) AS VECTOR({DIM})) AS distance") in compiled
    assert "JOIN found ON articles.id = found.id" in compiled
    exact = str(exact_search_select(Article.embedding, QUERIES[0]).compile(
        dialect=postgresql.dialect()))
    assert "candidates" not in exact and "l2_normalize" not in exact


# --- (a) search ------------------------------------------------------------------------------


def test_search_returns_the_users_own_instances_with_the_exact_search_distances(articles):
    engine, conn, config = articles
    recalls = []
    with Session(engine) as session:
        for query in QUERIES:
            rows = search(session, Article.embedding, query, k=10)
            assert len(rows) == 10 and all(isinstance(a, Article) for a, _ in rows)
            distances = [d for _, d in rows]
            assert distances == sorted(distances)
            truth = psycopg_exact_search(conn, config, query, k=10)
            exact = {r.id: r.distance for r in truth}
            for article, distance in rows:
                if article.id in exact:
                    assert distance == pytest.approx(exact[article.id], abs=1e-6)
            # distance is cosine distance on the full stored vector
            stored = np.array([a.embedding for a, _ in rows])
            cosine = stored @ query / np.linalg.norm(stored, axis=1) / np.linalg.norm(query)
            np.testing.assert_allclose(distances, 1 - cosine, atol=1e-5)
            recalls.append(_recall([a.id for a, _ in rows], list(exact)))
            # the same rows as the psycopg front end's adaptive search
            assert [a.id for a, _ in rows] == [r.id for r in psycopg_search(conn, config, query)]
    assert _report("ORM search of an adopted table", recalls) >= 0.95


# --- (b) the plan ----------------------------------------------------------------------------


def _explain(session: Session, statement: str, parameters: Any,
             options: dict[str, Any]) -> Any:
    return session.connection().exec_driver_sql(
        f"EXPLAIN (FORMAT JSON) {statement}", parameters, execution_options=options
    ).scalar_one()


@contextmanager
def _sent_searches(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Each adaptive statement the engine sends, with its parameters, while inside."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "candidates AS MATERIALIZED" in statement:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def test_explain_shows_the_adopted_hnsw_index_for_the_compiled_and_the_sent_statement(articles):
    engine, _, _ = articles
    statement = search_select(Article.embedding, QUERIES[1], k=10, prefix_dim=PREFIX)
    options = statement.get_execution_options()
    compiled = statement.compile(dialect=postgresql.dialect(),
                                 compile_kwargs={"literal_binds": True})
    with Session(engine) as session:
        plan = _explain(session, str(compiled), None, options)
        assert uses_index(plan, INDEX), plan
        # What search() itself sends, with the prefix it read from the adoption.
        with _sent_searches(engine) as sent:
            search(session, Article.embedding, QUERIES[1], k=10)
        [(text_sent, parameters)] = sent
        assert uses_index(_explain(session, text_sent, parameters, options), INDEX)


# --- (c), (d) filters ------------------------------------------------------------------------


@pytest.mark.parametrize("through_index", [False, True], ids=["planner", "forced-hnsw"])
def test_a_filter_matching_one_percent_of_rows_still_returns_k_matching_rows(
    articles, through_index
):
    engine, conn, config = articles
    recalls = []
    with Session(engine) as session, _sent_searches(engine) as sent:
        assert session.scalar(select(func.count()).where(Article.author_id == 7)) == 50
        if through_index:
            # 5,000 rows: the planner may rather scan 50 rows; make it walk the HNSW graph,
            # where only the iterative scan finds 10 matching rows among 1%.
            session.execute(text("SET LOCAL enable_seqscan = off"))
        for query in QUERIES:
            rows = search(session, Article.embedding, query, k=10,
                          where=[Article.author_id == 7])
            assert len(rows) == 10 and all(a.author_id == 7 for a, _ in rows)
            truth = psycopg_exact_search(conn, config, query, k=10, where={"author_id": 7})
            recalls.append(_recall([a.id for a, _ in rows], [r.id for r in truth]))
        if through_index:
            options = search_select(Article.embedding, QUERIES[0], prefix_dim=PREFIX,
                                    where=[Article.author_id == 7]).get_execution_options()
            assert uses_index(_explain(session, *sent[0], options), INDEX)
    label = "through HNSW (forced)" if through_index else "planner's choice"
    assert _report(f"ORM search, author_id = 7 (1% of rows), {label}", recalls) >= 0.95


def test_a_join_filter_written_as_a_subquery_returns_k_rows_of_french_authors(articles):
    engine, _, _ = articles
    french = select(Author.id).where(Author.country == "fr")
    written_in_france = exists().where(Author.id == Article.author_id, Author.country == "fr")
    recalls = []
    with Session(engine) as session:
        countries = dict(session.execute(select(Author.id, Author.country)).all())
        for query in QUERIES[:10]:
            rows = search(session, Article.embedding, query, k=10,
                          where=[Article.author_id.in_(french)])
            assert len(rows) == 10 and all(countries[a.author_id] == "fr" for a, _ in rows)
            same = search(session, Article.embedding, query, k=10, where=[written_in_france])
            assert [a.id for a, _ in same] == [a.id for a, _ in rows]
            truth = exact_search(session, Article.embedding, query, k=10,
                                 where=[Article.author_id.in_(french)])
            recalls.append(_recall([a.id for a, _ in rows], [a.id for a, _ in truth]))
        # A second table in the candidate scan would multiply its rows: refused, with the fix.
        with pytest.raises(InvalidSearchError, match="through a subquery"):
            search(session, Article.embedding, QUERIES[0], where=[Author.country == "fr"])
    assert _report("ORM search, authors in France (IN subquery)", recalls) >= 0.95


# --- (e), (f) other tables -------------------------------------------------------------------


def _fill_and_adopt(conn: psycopg.Connection[Any], table: str, columns: str, types: list[str],
                    rows: Iterator[list[Any]]) -> None:
    _copy(conn, f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)", types, rows)
    conn.execute(f"ANALYZE {table}")
    adopt_table(conn, table_config(conn, table, embedding="embedding",
                                             prefix_dim=PREFIX))


def test_a_halfvec_embedding_column_is_searched_through_its_own_index(conn, schema_dsn):
    class Own(DeclarativeBase):
        pass

    class Note(Own):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        embedding: Mapped[Any] = mapped_column(HALFVEC(DIM))

    conn.execute(f"CREATE TABLE notes (id int PRIMARY KEY, embedding halfvec({DIM}))")
    vectors = make_corpus(3000, DIM, seed=21).embeddings
    _fill_and_adopt(conn, "notes", "id, embedding", ["int4", "halfvec"],
                    iter([[i, HalfVector(v)] for i, v in enumerate(vectors)]))
    config = table_config(conn, "notes")
    assert config.embedding_type == "halfvec"
    engine = create_engine(schema_dsn)
    recalls = []
    try:
        with Session(engine) as session:
            select = search_select(Note.embedding, QUERIES[0], prefix_dim=PREFIX)
            compiled = str(select.compile(
                dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
            plan = _explain(session, compiled, None, dict(select.get_execution_options()))
            assert uses_index(plan, "notes_embedding_prefix_hnsw"), plan
            for query in QUERIES[:10]:
                rows = search(session, Note.embedding, query, k=10)
                truth = exact_search(session, Note.embedding, query, k=10)
                assert [r.id for r in psycopg_exact_search(conn, config, query)] == [
                    n.id for n, _ in truth]
                assert len(rows) == 10 and all(isinstance(n, Note) for n, _ in rows)
                recalls.append(_recall([n.id for n, _ in rows], [n.id for n, _ in truth]))
    finally:
        engine.dispose()
    assert f"AS HALFVEC({DIM})" in compiled
    assert _report("ORM search, halfvec column", recalls) >= 0.95


def test_a_composite_primary_key_joins_the_best_rows_back_on_every_key_column(conn, schema_dsn):
    class Own(DeclarativeBase):
        pass

    class Page(Own):
        __tablename__ = "pages"
        site: Mapped[str] = mapped_column(Text, primary_key=True)
        number: Mapped[int] = mapped_column(Integer, primary_key=True)
        embedding: Mapped[Any] = mapped_column(VECTOR(DIM))

    conn.execute(f"CREATE TABLE pages (site text, number int, embedding vector({DIM}), "
                 "PRIMARY KEY (site, number))")
    # Every page number exists on three sites, with different vectors.
    vectors = make_corpus(3000, DIM, seed=21).embeddings
    _fill_and_adopt(conn, "pages", "site, number, embedding", ["text", "int4", "vector"],
                    iter([[f"site{i % 3}", i // 3, v] for i, v in enumerate(vectors)]))
    config = table_config(conn, "pages")
    assert config.key == ("site", "number")
    engine = create_engine(schema_dsn)
    recalls = []
    try:
        with Session(engine) as session:
            for query in QUERIES[:10]:
                rows = search(session, Page.embedding, query, k=10)
                keys = [(p.site, p.number) for p, _ in rows]
                assert len(keys) == len(set(keys)) == 10
                truth = psycopg_exact_search(conn, config, query, k=10)
                exact = {(r.site, r.number): r.distance for r in truth}
                for page, distance in rows:
                    if (page.site, page.number) in exact:
                        assert distance == pytest.approx(exact[page.site, page.number], abs=1e-6)
                recalls.append(_recall(keys, list(exact)))
            only = search(session, Page.embedding, QUERIES[0], where=[Page.site == "site1"])
            assert len(only) == 10 and {p.site for p, _ in only} == {"site1"}
    finally:
        engine.dispose()
    assert _report("ORM search, composite primary key", recalls) >= 0.95


def test_an_embedding_column_whose_name_needs_quoting_is_searched_by_its_index(
    conn, schema_dsn
):
    class Own(DeclarativeBase):
        pass

    class Odd(Own):
        __tablename__ = "odd"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        embedding: Mapped[Any] = mapped_column("Emb :v %x", VECTOR(DIM))

    conn.execute(f'CREATE TABLE odd (id int PRIMARY KEY, "Emb :v %x" vector({DIM}))')
    vectors = make_corpus(500, DIM, seed=21).embeddings
    _copy(conn, 'COPY odd (id, "Emb :v %x") FROM STDIN (FORMAT BINARY)', ["int4", "vector"],
          iter([[i, v] for i, v in enumerate(vectors)]))
    conn.execute("ANALYZE odd")
    adopt_table(conn, table_config(conn, "odd", embedding="Emb :v %x",
                                             prefix_dim=PREFIX))
    engine = create_engine(schema_dsn)
    try:
        with Session(engine) as session:
            session.execute(text("SET LOCAL enable_seqscan = off"))  # 500 rows
            with _sent_searches(engine) as sent:
                [(found, distance)] = search(session, Odd.embedding, vectors[42], k=1)
            assert found.id == 42 and distance == pytest.approx(0, abs=1e-6)
            options = search_select(Odd.embedding, vectors[42], prefix_dim=PREFIX
                                    ).get_execution_options()
            assert uses_index(_explain(session, *sent[0], options), "odd_embedding_prefix_hnsw")
    finally:
        engine.dispose()


# --- (g) async -------------------------------------------------------------------------------


async def test_the_async_twins_return_the_same_rows_as_sync(articles, articles_dsn):
    from sqlalchemy.ext.asyncio import AsyncSession

    engine, _, _ = articles
    french = Article.author_id.in_(select(Author.id).where(Author.country == "fr"))
    cases: list[dict[str, Any]] = [{}, {"where": [Article.author_id == 7]},
                                   {"where": [french], "k": 5, "offset": 5}]
    with Session(engine) as sync:
        expected = [[(a.id, d) for a, d in search(sync, Article.embedding, q, **case)]
                    for q in QUERIES[:5] for case in cases]
        expected_exact = [(a.id, d) for a, d in exact_search(sync, Article.embedding, QUERIES[0])]
    async_engine = create_async_engine(articles_dsn)
    try:
        async with AsyncSession(async_engine) as session:
            found = [[(a.id, d) for a, d in await search_async(session, Article.embedding, q,
                                                               **case)]
                     for q in QUERIES[:5] for case in cases]
            exact = await exact_search_async(session, Article.embedding, QUERIES[0])
    finally:
        await async_engine.dispose()
    assert found == expected and all(found)
    assert [(a.id, d) for a, d in exact] == expected_exact


# --- (h) errors ------------------------------------------------------------------------------


async def test_a_column_that_is_not_a_vector_is_named_before_any_sql():
    from sqlalchemy.ext.asyncio import AsyncSession

    # Sessions bound to nothing: reaching SQL would raise UnboundExecutionError instead.
    message = "Article.title is TEXT, not a pgvector VECTOR\\(n\\) or HALFVEC\\(n\\) column"
    with pytest.raises(InvalidConfigError, match=message):
        search(Session(), Article.title, QUERIES[0])
    with pytest.raises(InvalidConfigError, match=message):
        exact_search(Session(), Article.title, QUERIES[0])
    with pytest.raises(InvalidConfigError, match=message):
        await search_async(AsyncSession(), Article.title, QUERIES[0])
    with pytest.raises(InvalidConfigError, match="MrlMixin model or a mapped vector column"):
        search(Session(), Article, QUERIES[0])  # type: ignore[type-var]
    with pytest.raises(InvalidConfigError, match="pass prefix_dim="):
        search_select(Article.embedding, QUERIES[0])


async def test_a_table_that_was_not_adopted_is_refused_with_the_way_out(conn, schema_dsn):
    from sqlalchemy.ext.asyncio import AsyncSession

    conn.execute(f"CREATE TABLE articles (id bigserial PRIMARY KEY, title text, body text, "
                 f"author_id bigint, embedding vector({DIM}))")
    conn.execute("INSERT INTO articles (embedding) SELECT %s FROM generate_series(1, 3)",
                 (QUERIES[0],))
    engine, async_engine = create_engine(schema_dsn), create_async_engine(schema_dsn)
    try:
        with Session(engine) as session:
            with pytest.raises(InvalidConfigError, match="adopt it first"):
                search(session, Article.embedding, QUERIES[0])
            # Exact search needs no index, so it works on any vector column.
            assert len(exact_search(session, Article.embedding, QUERIES[0], k=2)) == 2
        async with AsyncSession(async_engine) as asession:
            with pytest.raises(InvalidConfigError, match="adopt it first"):
                await search_async(asession, Article.embedding, QUERIES[0])
    finally:
        engine.dispose()
        await async_engine.dispose()


def test_a_model_mapped_with_another_dimension_than_the_table_is_refused(articles):
    engine, _, _ = articles

    class Own(DeclarativeBase):
        pass

    class Wrong(Own):
        __tablename__ = "articles"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        embedding: Mapped[Any] = mapped_column(VECTOR(128))

    message = rf"mapped as vector\(128\) but the table holds vector\({DIM}\)"
    with Session(engine) as session, pytest.raises(InvalidConfigError, match=message):
        search(session, Wrong.embedding, QUERIES[0][:128])


# --- The MrlMixin with a tenant column -------------------------------------------------------


def _tenant_model(config: TableConfig) -> tuple[type[DeclarativeBase], Any]:
    class Own(DeclarativeBase):
        pass

    class Document(mrl_mixin(config), Own):  # type: ignore[misc]
        pass

    return Own, Document


@pytest.fixture
def other_schema(conn: psycopg.Connection[Any], schema: str) -> Iterator[str]:
    name = f"{schema}_b"
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def _autogenerate_diffs(engine: Engine, metadata: Any, schema: str) -> list[Any]:
    def only_this_schema(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        return (type_ != "schema" or name == schema) and include_name(name, type_, parent_names)

    # A computed expression that differs is only a warning in Alembic: make it fail.
    with warnings.catch_warnings(), engine.connect() as connection:
        warnings.simplefilter("error")
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "compare_server_default": True, "include_schemas": True,
            "include_name": only_this_schema})
        return list(compare_metadata(context, metadata))


def test_a_tenant_mixin_builds_the_same_table_as_the_ddl_and_alembic_sees_no_change(
    conn, database_dsn, schema, other_schema
):
    settings = {"full_dim": 96, "prefix_dim": 32, "tenant_column": "tenant_id"}
    base, model = _tenant_model(TableConfig("docs", schema=schema, **settings))
    engine = create_engine(database_dsn)  # search_path at public: the schemas are named
    try:
        base.metadata.create_all(engine)
        installed = TableConfig("docs", schema=other_schema, **settings)
        install(conn, installed, with_search_function=False)
        from_orm = describe_table(conn, schema, "docs")
        assert from_orm == describe_table(conn, other_schema, "docs")
        assert [c[0] for c in from_orm["columns"]][:3] == ["id", "tenant_id", "external_id"]
        assert ("docs_external_id_key", "UNIQUE (tenant_id, external_id)") in from_orm[
            "constraints"]
        other, _ = _tenant_model(installed)
        assert _autogenerate_diffs(engine, other.metadata, other_schema) == []
        # Not blind: the same model without the tenant column differs from the table.
        plain, _ = _tenant_model(TableConfig("docs", schema=other_schema, full_dim=96,
                                             prefix_dim=32))
        diffs = _autogenerate_diffs(engine, plain.metadata, other_schema)
        assert ("remove_column", "tenant_id") in [(d[0], d[3].name) for d in diffs
                                                  if isinstance(d, tuple) and len(d) > 3]
    finally:
        engine.dispose()
    assert model.tenant_id.property.columns[0].nullable is False


@pytest.fixture
def tenant_model(schema: str, schema_dsn: str) -> Iterator[tuple[Engine, Any]]:
    """A tenant model written the typed way: the config in the class body, the column
    declared for the type checker only (the mixin maps it)."""
    config = TableConfig("docs", full_dim=8, prefix_dim=4, schema=schema,
                         tenant_column="tenant_id")

    class Own(DeclarativeBase):
        pass

    class Document(MrlMixin, Own):
        mrl_config = config
        tenant_id: Mapped[str]

    engine = create_engine(schema_dsn)
    Own.metadata.create_all(engine)
    yield engine, Document
    engine.dispose()


def test_tenants_may_share_an_external_id_and_search_filters_by_tenant(tenant_model):
    engine, model = tenant_model
    assert [c.name for c in model.__table__.columns][:3] == ["id", "tenant_id", "external_id"]
    vector = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    with Session(engine) as session:
        session.add_all([model(tenant_id="a", external_id="x", embedding=vector),
                         model(tenant_id="b", external_id="x", embedding=vector)])
        session.commit()
        rows = search(session, model, vector, k=5, where=[model.tenant_id == "b"])
        assert [(d.tenant_id, d.external_id) for d, _ in rows] == [("b", "x")]


def test_a_tenant_mixin_listed_after_the_base_is_refused_by_name():
    config = TableConfig("docs", full_dim=8, prefix_dim=4, tenant_column="tenant_id")

    class Own(DeclarativeBase):
        pass

    with pytest.raises(InvalidConfigError, match="list MrlMixin before the declarative base"):
        class Document(Own, MrlMixin):
            mrl_config = config
